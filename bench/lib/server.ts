/**
 * Starts the real Hangar server (`node dist/src/cli/main.js serve`) as a child
 * process on a fresh data directory and a free port, waits for its admin key
 * and /healthz, and stops it (SIGTERM, then SIGKILL).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { childPids } from './proc.js';
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
  /** 1, or N with `serve --replicas N`. */
  readonly replicas: number;
  /** The processes that serve requests: [pid], or the replica workers (children of the cluster primary at `pid`). */
  servingPids(): number[];
}

export interface HangarOptions {
  readonly simLatencyMs?: number;
  readonly simHosts?: string;
  /** More HANGAR_* variables (e.g. HANGAR_RESYNC_INTERVAL). */
  readonly env?: Readonly<Record<string, string>>;
  /** Extra node flags, e.g. ['--cpu-prof', '--cpu-prof-dir=/tmp/prof']. */
  readonly nodeArgs?: readonly string[];
  readonly startTimeoutMs?: number;
  /** PostgreSQL URL (HANGAR_DATABASE_URL); without it the embedded SQLite store. */
  readonly databaseUrl?: string;
  /** `serve --replicas N` (node:cluster, PostgreSQL only). */
  readonly replicas?: number;
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

/** GET /healthz on a new connection (no keep-alive: with replicas, each connection may reach another one). */
async function healthy(url: string): Promise<boolean> {
  return new Promise((ok) => {
    const req = httpGet(`${url}/healthz`, { agent: false, headers: { connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () => ok(res.statusCode === 200));
      res.on('error', () => ok(false));
    });
    req.setTimeout(5000, () => req.destroy());
    req.on('error', () => ok(false));
  });
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
    ...(opts.databaseUrl !== undefined ? { HANGAR_DATABASE_URL: opts.databaseUrl } : {}),
    ...opts.env,
  };
  const replicas = opts.replicas ?? 1;
  const serveArgs = replicas > 1 ? ['serve', '--replicas', String(replicas)] : ['serve'];
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), join(REPO_ROOT, 'dist/src/cli/main.js'), ...serveArgs], {
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
  // Replica workers seen while running: killed by pid if they outlive the primary.
  const workers = new Set<number>();
  const servingPids = (): number[] => {
    if (replicas <= 1 || child.pid === undefined) return child.pid === undefined ? [] : [child.pid];
    const pids = childPids(child.pid);
    for (const p of pids) workers.add(p);
    return pids;
  };
  const stop = async () => {
    if (replicas > 1) servingPids();
    await stopChild(child, replicas > 1 ? 15_000 : 5000);
    for (const p of workers) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        // Already gone (the primary stopped it).
      }
    }
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    await waitUntil(
      'Hangar to start',
      async () => {
        if (child.exitCode !== null) throw new Error(`hangar exited with ${child.exitCode}: ${stderr}`);
        if (replicas > 1 && servingPids().length < replicas) return false;
        if (!existsSync(keyFile)) return false;
        // Each new connection goes to the next replica: ask as many times as there are replicas.
        for (let r = 0; r < replicas; r++) if (!(await healthy(url))) return false;
        return true;
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
  return { pid: child.pid, url, port, adminKey, dataDir, replicas, servingPids, stop };
}
