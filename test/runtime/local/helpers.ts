/**
 * Shared helpers for the local runtime suites: a runtime on a fresh temp state
 * dir that cleans up every machine it made, exec-and-collect, and polling with
 * a deadline (never blind sleeps).
 */
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecRequest, ExecResult, SandboxSpec } from '../../../src/runtime/runtime.js';
import { createLocalRuntime, type LocalRuntime } from '../../../src/runtime/local/index.js';

export const POLL_MS = 20;

export interface Harness {
  readonly stateDir: string;
  rt: LocalRuntime;
  spec(machineId: string, sizes?: Partial<SandboxSpec['sizes']>): SandboxSpec;
  /** Starts a machine and remembers it for cleanup. */
  boot(machineId: string, sizes?: Partial<SandboxSpec['sizes']>): Promise<SandboxSpec>;
  cleanup(): Promise<void>;
}

export async function harness(): Promise<Harness> {
  const stateDir = await mkdtemp(join(tmpdir(), 'hangar-local-test-'));
  const made = new Set<string>();
  const h: Harness = {
    stateDir,
    rt: await createLocalRuntime({ stateDir }),
    spec(machineId, sizes = {}) {
      return {
        machineId,
        hostId: h.rt.hostId,
        sizes: { vcpu: 1, memoryMib: 256, storageGib: 1, ...sizes },
      };
    },
    async boot(machineId, sizes) {
      const spec = h.spec(machineId, sizes);
      made.add(machineId);
      await h.rt.start(spec);
      return spec;
    },
    async cleanup() {
      // Whatever any runtime instance left: recover([]) destroys every sandbox of this state dir.
      for (const id of made) await h.rt.destroy(id);
      await h.rt.recover([]);
      await h.rt.close();
      await rm(stateDir, { recursive: true, force: true });
    },
  };
  return h;
}

export interface Collected {
  readonly stdout: string;
  readonly stderr: string;
  readonly result: ExecResult;
}

export async function run(rt: LocalRuntime, machineId: string, argv: string[], req: Partial<ExecRequest> = {}): Promise<Collected> {
  let stdout = '';
  let stderr = '';
  const handle = await rt.exec(machineId, { ...req, argv }, (stream, chunk) => {
    if (stream === 'stdout') stdout += chunk.toString();
    else stderr += chunk.toString();
  });
  const result = await handle.done;
  return { stdout, stderr, result };
}

/** Runs a shell snippet in the machine and returns its stdout; fails on a non-zero exit. */
export async function sh(rt: LocalRuntime, machineId: string, script: string): Promise<string> {
  const r = await run(rt, machineId, ['sh', '-c', script]);
  if (r.result.exitCode !== 0) throw new Error(`sh -c ${JSON.stringify(script)} -> ${JSON.stringify(r.result)}: ${r.stderr}`);
  return r.stdout;
}

export async function waitUntil(what: string, check: () => Promise<boolean> | boolean, deadlineMs = 10_000): Promise<void> {
  const until = Date.now() + deadlineMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

/** The Uid: line of a host process: real, effective, saved, fs. */
export async function hostUids(pid: number): Promise<number[]> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const line = /^Uid:\s+(.*)$/m.exec(status)?.[1] ?? '';
  return line.trim().split(/\s+/).map(Number);
}

export async function processExists(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) [ZX] /.test(stat);
  } catch {
    return false;
  }
}

/** Every cgroup directory on the host named after the machine (any hierarchy). */
export async function findCgroupDirs(machineId: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (dir: string, depth: number): Promise<void> => {
    if (depth > 4) return;
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const p = join(dir, e.name);
      if (e.name === machineId) found.push(p);
      await walk(p, depth + 1);
    }
  };
  for (const top of await readdir('/sys/fs/cgroup')) {
    await walk(join('/sys/fs/cgroup', top, 'hangar'), 0);
  }
  await walk('/sys/fs/cgroup/hangar', 0);
  return found;
}

export async function mountsUnder(dir: string): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((mp) => mp.startsWith(dir));
}

/** Loop devices whose backing file is under `dir`. */
export async function loopsUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const dev of await readdir('/sys/block')) {
    if (!dev.startsWith('loop')) continue;
    try {
      const backing = (await readFile(`/sys/block/${dev}/loop/backing_file`, 'utf8')).trim();
      if (backing.startsWith(dir)) out.push(dev);
    } catch {
      // not bound
    }
  }
  return out;
}
