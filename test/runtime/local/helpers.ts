/**
 * Shared helpers for the local runtime suites: a runtime on a fresh temp state
 * dir that cleans up every machine it made, exec-and-collect, and polling with
 * a deadline (never blind sleeps).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, realpath, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import ts from 'typescript';
import type { ExecRequest, ExecResult, SandboxSpec } from '../../../src/runtime/runtime.js';
import { createLocalRuntime, type LocalRuntime, type Logger, type SandboxInfo } from '../../../src/runtime/local/index.js';

export const POLL_MS = 20;
const REPO = resolve(import.meta.dirname, '../../..');

/**
 * How the harness starts machines. `cold`: no warm pool, every start boots.
 * `pooled`: a warm pool, and boot() waits for a ready entry and checks that the
 * machine was bound to it, so every guarantee a suite checks is checked on
 * pooled machines too.
 */
export type StartMode = 'cold' | 'pooled';
export const START_MODES: readonly StartMode[] = ['cold', 'pooled'];
const POOL_SIZE = 2;

/** The runtime's warnings (a failed teardown, a pool entry that could not be prepared) end up in the test output. */
export const TEST_LOGGER: Logger = {
  info: () => undefined,
  warn: (fields: unknown, msg?: unknown) => console.warn(String(msg ?? ''), fields instanceof Object && 'err' in fields ? String(fields.err) : '', JSON.stringify(fields)),
};

export interface Harness {
  readonly stateDir: string;
  readonly mode: StartMode;
  rt: LocalRuntime;
  spec(machineId: string, sizes?: Partial<SandboxSpec['sizes']>): SandboxSpec;
  /** Starts a machine and remembers it for cleanup. */
  boot(machineId: string, sizes?: Partial<SandboxSpec['sizes']>): Promise<SandboxSpec>;
  /** A new runtime on the same state dir and mode (a controlplane restart); the caller closes the old one. */
  reopen(): Promise<LocalRuntime>;
  cleanup(): Promise<void>;
}

export async function harness(mode: StartMode = 'cold'): Promise<Harness> {
  const stateDir = await mkdtemp(join(tmpdir(), 'hangar-local-test-'));
  const made = new Set<string>();
  const open = () => createLocalRuntime({ stateDir, poolSize: mode === 'pooled' ? POOL_SIZE : 0, logger: TEST_LOGGER });
  const h: Harness = {
    stateDir,
    mode,
    rt: await open(),
    reopen: open,
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
      if (mode === 'pooled') await waitForPool(h.rt, spec.sizes.storageGib, 1);
      await h.rt.start(spec);
      const pooled = (await h.rt.sandboxInfo(machineId))?.pooled;
      if (pooled !== (mode === 'pooled')) throw new Error(`${machineId} was started ${pooled ? 'from the pool' : 'cold'} in ${mode} mode`);
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

/** Loop devices whose backing file is under `dir`, as "loopN /path/to/backing-file". */
export async function loopsUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const dev of await readdir('/sys/block')) {
    if (!dev.startsWith('loop')) continue;
    try {
      const backing = (await readFile(`/sys/block/${dev}/loop/backing_file`, 'utf8')).trim();
      // With its backing file: a freed device number is soon bound again, to another image.
      if (backing.startsWith(dir)) out.push(`${dev} ${backing}`);
    } catch {
      // not bound
    }
  }
  return out;
}

/** Waits until the runtime's warm pool has `ready` entries of `storageGib`. */
export async function waitForPool(rt: LocalRuntime, storageGib: number, ready: number, deadlineMs = 30_000): Promise<void> {
  await waitUntil(
    `${ready} warm pool entries of ${storageGib} GiB`,
    () => {
      const s = rt.poolStats();
      return s !== null && s.storageGib === storageGib && s.ready >= ready;
    },
    deadlineMs,
  );
}

/** What the warm pool of a state dir holds on the host right now. */
export interface PoolFootprint {
  /** Entry directories (<stateDir>/pool/<owner>/_pool-*). */
  readonly dirs: string[];
  /** Cgroup directories named _pool-* in this state dir's scope, any hierarchy. */
  readonly cgroups: string[];
  /** Processes in those cgroups. */
  readonly pids: number[];
  readonly mounts: string[];
  readonly loops: string[];
  /** Everything in <stateDir>/pool (owner files and directories). */
  readonly files: string[];
}

export async function poolFootprint(stateDir: string): Promise<PoolFootprint> {
  const real = await realpath(stateDir);
  const poolDir = join(real, 'pool');
  const files = await readdir(poolDir).catch(() => [] as string[]);
  const dirs: string[] = [];
  for (const f of files) {
    for (const e of await readdir(join(poolDir, f)).catch(() => [] as string[])) if (e.startsWith('_pool-')) dirs.push(join(poolDir, f, e));
  }
  // The runtime's cgroup scope: a hash of the real state dir path.
  const scope = createHash('sha256').update(real).digest('hex').slice(0, 12);
  const cgroups: string[] = [];
  const pids = new Set<number>();
  for (const top of await readdir('/sys/fs/cgroup')) {
    const scopeDir = join('/sys/fs/cgroup', top, 'hangar', scope);
    for (const e of await readdir(scopeDir).catch(() => [] as string[])) {
      if (!e.startsWith('_pool-')) continue;
      cgroups.push(join(scopeDir, e));
      const procs = await readFile(join(scopeDir, e, 'cgroup.procs'), 'utf8').catch(() => '');
      for (const l of procs.split('\n')) if (l !== '') pids.add(Number(l));
    }
  }
  return { dirs, cgroups, pids: [...pids], mounts: await mountsUnder(poolDir), loops: await loopsUnder(poolDir), files };
}

/**
 * Transpiles all of src/ to `outDir` (ESM), so a test can run the runtime in a
 * separate node process it can SIGKILL. All of it: the runtime imports from
 * the domain too, and a hand-kept list goes stale.
 */
export async function transpileSources(outDir: string): Promise<void> {
  const files = (await readdir(join(REPO, 'src'), { recursive: true })).filter((f) => f.endsWith('.ts')).map((f) => `src/${f}`);
  for (const f of files) {
    const out = ts.transpileModule(await readFile(join(REPO, f), 'utf8'), {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    });
    const target = join(outDir, f.replace(/\.ts$/, '.js'));
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, out.outputText);
  }
  await writeFile(join(outDir, 'package.json'), '{"type":"module"}');
}

/**
 * A controlplane in a child process running `script` (an ES module that
 * prints one line, the SandboxInfo of the machine it started, then idles),
 * so that a test can SIGKILL it as a crash would.
 */
export async function startCrashableControlplane(script: string, deadlineMs: number): Promise<{ info: SandboxInfo; kill(): Promise<void> }> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  let exitCode: number | null = null;
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.on('exit', (code) => (exitCode = code ?? -1));
  await waitUntil('the child controlplane to start its machine', () => out.includes('\n') || exitCode !== null, deadlineMs);
  if (exitCode !== null) throw new Error(`the child controlplane exited with ${exitCode}: ${out}`);
  return {
    info: JSON.parse(out.trim()) as SandboxInfo,
    kill: async () => {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    },
  };
}
