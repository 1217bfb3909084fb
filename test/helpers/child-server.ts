/** The real `hangar serve` as a child process, for tests that kill it. */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';

export interface ChildServer {
  readonly url: string;
  readonly proc: ChildProcess;
  readonly output: () => string;
  kill(signal: NodeJS.Signals): Promise<number | null>;
}

const MAIN = new URL('../../dist/src/cli/main.js', import.meta.url).pathname;

/** Servers this test process started: none may outlive it, whatever happens to the test. */
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const proc of live) proc.kill('SIGKILL');
});

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

export async function startChildServer(dataDir: string, env: Record<string, string> = {}, port?: number): Promise<ChildServer> {
  // A free port can be taken by a parallel suite before the child binds it: try another.
  for (let attempt = 0; ; attempt++) {
    try {
      return await startOnce(dataDir, env, port ?? (await freePort()));
    } catch (err) {
      if (port !== undefined || attempt >= 4 || !/EADDRINUSE/.test(String(err))) throw err;
    }
  }
}

async function startOnce(dataDir: string, env: Record<string, string>, p: number): Promise<ChildServer> {
  let output = '';
  const proc = spawn(process.execPath, [MAIN, 'serve'], {
    env: {
      ...process.env,
      HANGAR_PORT: String(p),
      HANGAR_HOST: '127.0.0.1',
      HANGAR_DATA_DIR: dataDir,
      HANGAR_RUNTIME: 'sim',
      HANGAR_LOG_LEVEL: 'warn',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(proc);
  proc.once('exit', () => live.delete(proc));
  proc.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const url = `http://127.0.0.1:${p}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`server exited with ${proc.exitCode}: ${output}`);
    try {
      const res = await fetch(`${url}/healthz`);
      if (res.ok && existsSync(join(dataDir, 'admin.key'))) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`server did not start: ${output}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    proc,
    output: () => output,
    kill(signal) {
      return new Promise((resolve) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return resolve(proc.exitCode);
        proc.once('exit', (code) => resolve(code));
        proc.kill(signal);
      });
    },
  };
}

export function adminKeyOf(dataDir: string): string {
  return readFileSync(join(dataDir, 'admin.key'), 'utf8').trim();
}
