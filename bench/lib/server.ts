/**
 * Starts the real Hangar server (`node dist/src/cli/main.js serve`) as a child
 * process on a fresh data directory and a free port, waits for its admin key
 * and /healthz, and stops it (SIGTERM, then SIGKILL).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sleep, waitUntil } from './util.js';

/** dist/bench/lib -> repository root. */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

export async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => ok(port));
    });
  });
}

export interface ServerProcess {
  readonly pid: number;
  readonly url: string;
  readonly port: number;
  stop(): Promise<void>;
}

export interface HangarProcess extends ServerProcess {
  readonly adminKey: string;
  readonly dataDir: string;
}

export interface HangarOptions {
  readonly simLatencyMs?: number;
  readonly simHosts?: string;
  /** More HANGAR_* variables (e.g. HANGAR_RESYNC_INTERVAL). */
  readonly env?: Readonly<Record<string, string>>;
  /** Extra node flags, e.g. ['--cpu-prof', '--cpu-prof-dir=/tmp/prof']. */
  readonly nodeArgs?: readonly string[];
  readonly startTimeoutMs?: number;
}

const children = new Set<ChildProcess>();
let exitHooked = false;

/** Remembers a child so that it is killed if this process exits or is interrupted first. */
export function track(child: ChildProcess): void {
  children.add(child);
  child.once('exit', () => children.delete(child));
  if (exitHooked) return;
  exitHooked = true;
  process.once('exit', () => {
    for (const c of children) c.kill('SIGKILL');
  });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));
}

/** Kills a child: SIGTERM, then SIGKILL after `graceMs`. */
export async function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timedOut = await Promise.race([exited.then(() => false), sleep(graceMs).then(() => true)]);
  if (timedOut) {
    child.kill('SIGKILL');
    await exited;
  }
}

async function healthy(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/healthz`);
    await res.arrayBuffer();
    return res.ok;
  } catch {
    return false;
  }
}

export async function startHangarProcess(opts: HangarOptions = {}): Promise<HangarProcess> {
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), 'hangar-bench-'));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HANGAR_PORT: String(port),
    HANGAR_HOST: '127.0.0.1',
    HANGAR_DATA_DIR: dataDir,
    HANGAR_RUNTIME: 'sim',
    HANGAR_SIM_LATENCY_MS: String(opts.simLatencyMs ?? 1),
    HANGAR_SIM_HOSTS: opts.simHosts ?? '8x512/2097152/1000000',
    HANGAR_LOG_LEVEL: 'warn',
    ...opts.env,
  };
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), join(REPO_ROOT, 'dist/src/cli/main.js'), 'serve'], {
    env,
    stdio: ['ignore', 'inherit', 'pipe'],
  });
  track(child);
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    // The admin key banner goes to stderr; keep only the tail for error messages.
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  const url = `http://127.0.0.1:${port}`;
  const keyFile = join(dataDir, 'admin.key');
  const stop = async () => {
    await stopChild(child);
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    await waitUntil(
      'Hangar to start',
      async () => {
        if (child.exitCode !== null) throw new Error(`hangar exited with ${child.exitCode}: ${stderr}`);
        return existsSync(keyFile) && (await healthy(url));
      },
      opts.startTimeoutMs ?? 30_000,
      50,
    );
  } catch (err) {
    await stop();
    throw err;
  }
  const adminKey = readFileSync(keyFile, 'utf8').trim();
  if (child.pid === undefined) throw new Error('hangar has no pid');
  return { pid: child.pid, url, port, adminKey, dataDir, stop };
}
