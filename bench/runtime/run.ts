/**
 * Latency of the real local runtime through the whole stack: a `hangar serve`
 * child process (HANGAR_RUNTIME=local) driven over HTTP. Measures
 *   create -> running (a warm pool bind, or a cold boot on a pool miss),
 *   sleep (running -> sleeping), wake (sleeping -> running),
 *   and an execution round trip (POST `true` -> GET says succeeded),
 * each from the request's start until a GET first shows the result (GETs 1 ms
 * apart, so figures include up to ~1 ms of polling granularity).
 * Writes bench/runtime/RESULTS.md. Needs root and scripts/setup-host.sh.
 *
 *   npm run build && node dist/bench/runtime/run.js [--iterations 30]
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, totalmem, tmpdir } from 'node:os';
import { join } from 'node:path';
import { JsonClient } from '../lib/http.js';
import { runBenchmark } from '../lib/results.js';
import { REPO_ROOT, startHangarProcess } from '../lib/server.js';
import { fmt, markdownTable, summarize } from '../lib/stats.js';

const POLL_MS = 1;
const SIZE = { vcpu: 0.25, memory_mib: 64, storage_gib: 1 };

interface Machine {
  machine_id: string;
  desired_state: string;
  status: { phase: string };
}

function iterationsArg(): number {
  const i = process.argv.indexOf('--iterations');
  const n = i >= 0 ? Number(process.argv[i + 1]) : 30;
  if (!Number.isSafeInteger(n) || n < 1) throw new Error('--iterations wants a positive integer');
  return n;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Milliseconds from `start` until GET `path` satisfies `done`. */
async function until<T>(client: JsonClient, path: string, done: (body: T) => boolean, start: number, timeoutMs = 30_000): Promise<number> {
  for (;;) {
    const body = await client.json<T>('GET', path);
    if (done(body)) return performance.now() - start;
    if (performance.now() - start > timeoutMs) throw new Error(`${path}: not done after ${timeoutMs} ms: ${JSON.stringify(body)}`);
    await sleep(POLL_MS);
  }
}

const inPhase = (phase: string) => (m: Machine) => m.status.phase === phase;

async function main(): Promise<void> {
  const n = iterationsArg();
  // The sandboxes' unprivileged setup walks through the state dir's parents: o+x.
  const work = mkdtempSync(join(tmpdir(), 'hangar-bench-runtime-'));
  chmodSync(work, 0o711);
  const server = await startHangarProcess({
    env: { HANGAR_RUNTIME: 'local', HANGAR_LOCAL_STATE_DIR: join(work, 'state'), HANGAR_LOG_LEVEL: 'warn' },
    startTimeoutMs: 60_000,
  });
  const client = new JsonClient(server.url, server.adminKey, 8);
  const create: number[] = [];
  const sleepMs: number[] = [];
  const wake: number[] = [];
  const exec: number[] = [];
  try {
    // Create -> running, then destroy, one at a time (every machine reserves its vCPUs on this host).
    for (let i = 0; i < n; i++) {
      const start = performance.now();
      const m = await client.json<Machine>('POST', '/v1/machines', SIZE);
      create.push(await until(client, `/v1/machines/${m.machine_id}`, inPhase('running'), start));
      await client.json('DELETE', `/v1/machines/${m.machine_id}`);
      await until(client, `/v1/machines/${m.machine_id}`, inPhase('destroyed'), performance.now());
    }

    const m = await client.json<Machine>('POST', '/v1/machines', { ...SIZE, autosleep: 'never' });
    const path = `/v1/machines/${m.machine_id}`;
    await until(client, path, inPhase('running'), performance.now());
    for (let i = 0; i < n; i++) {
      let start = performance.now();
      await client.json('POST', `${path}/sleep`);
      sleepMs.push(await until(client, path, inPhase('sleeping'), start));
      start = performance.now();
      await client.json('POST', `${path}/wake`);
      wake.push(await until(client, path, inPhase('running'), start));
    }
    for (let i = 0; i < n; i++) {
      const start = performance.now();
      const e = await client.json<{ execution_id: string }>('POST', `${path}/executions`, { command: ['true'] });
      exec.push(await until<{ status: string }>(client, `${path}/executions/${e.execution_id}`, (x) => x.status === 'succeeded', start));
    }
    await client.json('DELETE', path);
    await until(client, path, inPhase('destroyed'), performance.now());
  } finally {
    client.close();
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  }

  const rows = [
    ['create -> running', create, 'p50 < 50 ms'],
    ['wake (sleeping -> running)', wake, 'p50 < 10 ms'],
    ['sleep (running -> sleeping)', sleepMs, ''],
    ['execution round trip (`true`)', exec, ''],
  ] as const;
  const table = markdownTable(
    ['operation', 'n', 'p50 ms', 'p99 ms', 'max ms', 'target'],
    rows.map(([name, values, target]) => {
      const s = summarize(values);
      return [name, String(s.count), fmt(s.p50), fmt(s.p99), fmt(s.max), target];
    }),
  );
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const text = [
    '# Local runtime latency',
    '',
    `Run ${new Date().toISOString()} on ${cpus().length} x ${cpu}, ${Math.round(totalmem() / 2 ** 30)} GiB RAM, Linux ${release()}, Node ${process.version}.`,
    'A `hangar serve` child process with HANGAR_RUNTIME=local and SQLite, driven over HTTP (keep-alive) one request at a time;',
    'each figure runs from the request until a GET (1 ms apart) first shows the result. Machines: 0.25 vCPU, 64 MiB, 1 GiB.',
    'The runtime keeps its default warm pool (2 pre-booted sandboxes, docs/local-runtime.md), so a create binds one unless',
    'the pool has not refilled since the previous create; measuring starts as soon as the server is up.',
    '',
    table,
    '',
    'Published claims, for scale (their own definitions, not measured here): Daytona "under 90 ms" to start a sandbox,',
    'E2B about 150 ms, Fly Machines about 300 ms to start.',
    '',
    'Reproduce: `npm run build && node dist/bench/runtime/run.js --iterations 30` (root, after scripts/setup-host.sh).',
    '',
  ].join('\n');
  writeFileSync(join(REPO_ROOT, 'bench/runtime/RESULTS.md'), text);
  process.stdout.write(text);
}

runBenchmark(main);
