/** Command-line flags (`--name value`, `--name=value`, `--flag`) with environment fallbacks (`BENCH_NAME`). */

const argv = process.argv.slice(2);

export function flag(name: string): boolean {
  return argv.includes(`--${name}`);
}

export function option(name: string): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === `--${name}`) return argv[i + 1];
    if (a.startsWith(`--${name}=`)) return a.slice(name.length + 3);
  }
  const env = process.env[`BENCH_${name.toUpperCase().replace(/-/g, '_')}`];
  return env === undefined || env === '' ? undefined : env;
}

export function numberOption(name: string, fallback: number): number {
  const raw = option(name);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw new Error(`--${name}: "${raw}" is not a number`);
  return n;
}

export function listOption(name: string, fallback: readonly number[]): number[] {
  const raw = option(name);
  if (raw === undefined) return [...fallback];
  // `--b-sizes ''` or `--b-sizes none`: no case of that kind.
  if (raw.trim() === '' || raw.trim() === 'none') return [];
  return raw.split(',').map((s) => {
    const n = Number(s.trim());
    if (!Number.isInteger(n) || n < 0) throw new Error(`--${name}: "${s}" is not a count`);
    return n;
  });
}
