/** What every benchmark does at the end: write its results, and exit with the run's outcome. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './server.js';

/** Writes bench/results/<name>-<time>.json and .md. */
export function writeResults(name: string, json: unknown, md: string): void {
  const dir = join(REPO_ROOT, 'bench/results');
  mkdirSync(dir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  writeFileSync(join(dir, `${name}-${stamp}.json`), JSON.stringify(json, null, 2));
  writeFileSync(join(dir, `${name}-${stamp}.md`), md);
}

/** Runs the benchmark and exits: 0 when it finished, 1 (with the error) when it did not. */
export function runBenchmark(main: () => Promise<void>): void {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
