/**
 * Per-machine cgroups: CPU quota, memory (and swap) limit, pids limit and the
 * freezer that implements sleep. cgroup v1 (one hierarchy per controller) and
 * v2 (unified) are both supported; which one is detected once at start.
 *
 * Layout: <controller mount>/hangar/<scope>/<machineId>, where <scope> is
 * derived from the state directory so two runtimes on one host (tests, a
 * second controlplane) never touch each other's machines.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseMountinfo } from './mountinfo.js';
import { killQuietly, sleep, waitFor } from './proc.js';
import { pathExists } from './paths.js';

/** CFS period: quota is expressed per 100 ms, the kernel's default. */
const CPU_PERIOD_US = 100_000;
/** Smallest quota the kernel accepts (1 ms). */
const MIN_CPU_QUOTA_US = 1_000;
/** v1 cpu.shares / v2 cpu.weight for one vCPU. */
const SHARES_PER_VCPU = 1024;
const WEIGHT_PER_VCPU = 100;
const MIB = 1024 * 1024;
/** How long freezing may take before we report it (a task stuck in D state). */
const FREEZE_DEADLINE_MS = 5_000;
const FREEZE_POLL_MS = 1;
/** How long killed tasks may take to leave the cgroup (they are reaped by their parents). */
const EMPTY_DEADLINE_MS = 10_000;
const EMPTY_POLL_MS = 10;

const V1_CONTROLLERS = ['cpu', 'cpuacct', 'memory', 'freezer', 'pids'] as const;
const V1_REQUIRED = ['cpu', 'memory', 'freezer', 'pids'] as const;
const V2_REQUIRED = ['cpu', 'memory', 'pids'] as const;
/** Controllers shown (read-only) inside the sandbox, so a machine can see its own limits. */
const V1_VISIBLE = ['cpu', 'cpuacct', 'memory', 'pids'] as const;

export interface CgroupLimits {
  readonly vcpu: number;
  readonly memoryMib: number;
  readonly pidsMax: number;
}

export type FreezeState = 'thawed' | 'freezing' | 'frozen';

interface MemoryState {
  /** v1: memory.memsw.limit_in_bytes exists (swap accounting); v2: memory.swap.max exists. */
  readonly swapFile: boolean;
  /** v1 with swap accounting: the current memory limit. */
  readonly limitBytes: number;
}

interface LimitWrite {
  readonly file: string;
  readonly value: string;
  /** Best effort: some kernels lack the file or refuse the value. */
  readonly optional: boolean;
}

/** Which cgroup version is usable here, and where. null: no usable cgroups. */
export type CgroupLayout =
  | { readonly version: 1; readonly mounts: ReadonlyMap<string, string> }
  | { readonly version: 2; readonly root: string };

export async function detectCgroups(): Promise<CgroupLayout | { error: string }> {
  let text: string;
  try {
    text = await readFile('/proc/self/mountinfo', 'utf8');
  } catch (e) {
    return { error: `cannot read /proc/self/mountinfo: ${(e as Error).message}` };
  }
  const mounts = parseMountinfo(text);
  const v1 = new Map<string, string>();
  for (const m of mounts) {
    if (m.fsType !== 'cgroup') continue;
    for (const c of V1_CONTROLLERS) if (m.superOptions.includes(c) && !v1.has(c)) v1.set(c, m.mountPoint);
  }
  // Hybrid hosts mount an empty cgroup2 next to v1: the v1 controllers are the real ones.
  if (V1_REQUIRED.every((c) => v1.has(c))) return { version: 1, mounts: v1 };
  for (const m of mounts) {
    if (m.fsType !== 'cgroup2') continue;
    try {
      const controllers = (await readFile(join(m.mountPoint, 'cgroup.controllers'), 'utf8')).trim().split(/\s+/);
      if (V2_REQUIRED.every((c) => controllers.includes(c))) return { version: 2, root: m.mountPoint };
    } catch {
      // not readable: keep looking
    }
  }
  const missing = V1_REQUIRED.filter((c) => !v1.has(c));
  return { error: `no usable cgroups: v1 controllers missing (${missing.join(', ')}) and no cgroup2 mount with ${V2_REQUIRED.join(', ')}` };
}


async function readTrim(p: string): Promise<string> {
  return (await readFile(p, 'utf8')).trim();
}

/** Cgroups of the machines of one runtime (one state directory). */
export class Cgroups {
  readonly version: 1 | 2;
  /** Per controller (v1) or the single unified root (v2, key ''), the scope directory. */
  private readonly scopeDirs: ReadonlyMap<string, string>;

  constructor(
    private readonly layout: CgroupLayout,
    scope: string,
  ) {
    this.version = layout.version;
    const dirs = new Map<string, string>();
    if (layout.version === 1) {
      for (const [c, mp] of layout.mounts) dirs.set(c, join(mp, 'hangar', scope));
    } else {
      dirs.set('', join(layout.root, 'hangar', scope));
    }
    this.scopeDirs = dirs;
  }

  /** Creates the scope directories (and enables v2 controllers down to them). */
  async init(): Promise<void> {
    if (this.layout.version === 2) {
      const root = this.layout.root;
      const enable = V2_REQUIRED.map((c) => `+${c}`).join(' ');
      await writeFile(join(root, 'cgroup.subtree_control'), enable).catch(() => undefined);
      await mkdir(join(root, 'hangar'), { recursive: true });
      await writeFile(join(root, 'hangar', 'cgroup.subtree_control'), enable);
    }
    for (const dir of this.uniqueScopeDirs()) await mkdir(dir, { recursive: true });
    if (this.layout.version === 2) await writeFile(join(this.scopeDir(''), 'cgroup.subtree_control'), V2_REQUIRED.map((c) => `+${c}`).join(' '));
  }

  /** The machine's directory in every hierarchy (deduplicated: v1 may co-mount controllers). */
  dirs(machineId: string): string[] {
    return this.uniqueScopeDirs().map((d) => join(d, machineId));
  }

  /** cgroup.procs files a new process writes itself into to join the machine. */
  procsFiles(machineId: string): string[] {
    return this.dirs(machineId).map((d) => join(d, 'cgroup.procs'));
  }

  /** Host directories bind-mounted read-only inside the sandbox, with their in-sandbox path. */
  visibleDirs(machineId: string): { host: string; inside: string }[] {
    if (this.layout.version === 2) return [{ host: this.dir('', machineId), inside: '/sys/fs/cgroup' }];
    const seen = new Set<string>();
    const out: { host: string; inside: string }[] = [];
    for (const c of V1_VISIBLE) {
      const scope = this.scopeDirs.get(c);
      if (scope === undefined || seen.has(scope)) continue;
      seen.add(scope);
      out.push({ host: join(scope, machineId), inside: `/sys/fs/cgroup/${c}` });
    }
    return out;
  }

  async create(machineId: string, limits: CgroupLimits): Promise<void> {
    for (const d of this.dirs(machineId)) await mkdir(d, { recursive: true });
    await this.setLimits(machineId, limits);
  }

  async setLimits(machineId: string, limits: CgroupLimits): Promise<void> {
    for (const w of this.limitWrites(machineId, limits, await this.memoryState(machineId))) {
      if (w.optional) await writeFile(w.file, w.value).catch(() => undefined);
      else await writeFile(w.file, w.value);
    }
  }

  /**
   * setLimits, synchronously. Only for a sandbox that uses next to no memory
   * (a warm pool entry being bound): lowering a busy machine's memory makes
   * the kernel reclaim inside the write, which must not block the event loop.
   * Here the writes never wait on anything, so they take microseconds, where
   * each async write costs three thread-pool round trips (about 1 ms on a busy
   * host) and together they were most of a pooled start.
   */
  setLimitsNow(machineId: string, limits: CgroupLimits): void {
    for (const w of this.limitWrites(machineId, limits, this.memoryStateNow(machineId))) {
      try {
        writeFileSync(w.file, w.value);
      } catch (e) {
        if (!w.optional) throw e;
      }
    }
  }

  /** What the order of the memory writes depends on: v1 memsw, whose limit must never fall below memory's. */
  private async memoryState(machineId: string): Promise<MemoryState> {
    if (this.layout.version === 2) return { swapFile: await pathExists(join(this.dir('', machineId), 'memory.swap.max')), limitBytes: 0 };
    const dir = this.dir('memory', machineId);
    if (!(await pathExists(join(dir, 'memory.memsw.limit_in_bytes')))) return { swapFile: false, limitBytes: 0 };
    return { swapFile: true, limitBytes: Number(await readTrim(join(dir, 'memory.limit_in_bytes'))) };
  }

  private memoryStateNow(machineId: string): MemoryState {
    if (this.layout.version === 2) return { swapFile: existsSync(join(this.dir('', machineId), 'memory.swap.max')), limitBytes: 0 };
    const dir = this.dir('memory', machineId);
    if (!existsSync(join(dir, 'memory.memsw.limit_in_bytes'))) return { swapFile: false, limitBytes: 0 };
    return { swapFile: true, limitBytes: Number(readFileSync(join(dir, 'memory.limit_in_bytes'), 'utf8').trim()) };
  }

  /** The files to write for `limits`, in an order the kernel accepts. */
  private limitWrites(machineId: string, limits: CgroupLimits, mem: MemoryState): LimitWrite[] {
    const quota = String(Math.max(MIN_CPU_QUOTA_US, Math.round(limits.vcpu * CPU_PERIOD_US)));
    const memBytes = Math.round(limits.memoryMib * MIB);
    const w = (file: string, value: string, optional = false): LimitWrite => ({ file, value, optional });
    if (this.layout.version === 2) {
      const d = this.dir('', machineId);
      return [
        w(join(d, 'cpu.max'), `${quota} ${CPU_PERIOD_US}`),
        w(join(d, 'cpu.weight'), String(Math.min(10_000, Math.max(1, Math.round(limits.vcpu * WEIGHT_PER_VCPU))))),
        w(join(d, 'memory.max'), String(memBytes)),
        // No swap: past its memory a machine's own processes are OOM-killed, not paged out.
        ...(mem.swapFile ? [w(join(d, 'memory.swap.max'), '0')] : []),
        w(join(d, 'pids.max'), String(limits.pidsMax)),
      ];
    }
    const cpu = this.dir('cpu', machineId);
    const memory = this.dir('memory', machineId);
    const limit = w(join(memory, 'memory.limit_in_bytes'), String(memBytes));
    const memsw = w(join(memory, 'memory.memsw.limit_in_bytes'), String(memBytes));
    // memsw (memory+swap) must stay >= the memory limit at every step, so the order of the
    // two writes depends on the direction of the change. Without swap accounting, no swapping.
    const memoryWrites = !mem.swapFile
      ? [limit, w(join(memory, 'memory.swappiness'), '0', true)]
      : memBytes > mem.limitBytes
        ? [memsw, limit]
        : [limit, memsw];
    return [
      w(join(cpu, 'cpu.cfs_period_us'), String(CPU_PERIOD_US)),
      w(join(cpu, 'cpu.cfs_quota_us'), quota),
      w(join(cpu, 'cpu.shares'), String(Math.max(2, Math.round(limits.vcpu * SHARES_PER_VCPU)))),
      ...memoryWrites,
      w(join(this.dir('pids', machineId), 'pids.max'), String(limits.pidsMax)),
    ];
  }

  async freezeState(machineId: string): Promise<FreezeState | null> {
    try {
      if (this.layout.version === 1) {
        const s = await readTrim(join(this.dir('freezer', machineId), 'freezer.state'));
        return s === 'FROZEN' ? 'frozen' : s === 'FREEZING' ? 'freezing' : 'thawed';
      }
      const d = this.dir('', machineId);
      const want = (await readTrim(join(d, 'cgroup.freeze'))) === '1';
      const events = await readFile(join(d, 'cgroup.events'), 'utf8');
      const frozen = /^frozen 1$/m.test(events);
      return frozen ? 'frozen' : want ? 'freezing' : 'thawed';
    } catch {
      return null;
    }
  }

  /** Freezes every task of the machine and waits until the kernel says they all are. */
  async freeze(machineId: string): Promise<boolean> {
    await this.writeFreeze(machineId, true);
    return waitFor(async () => (await this.freezeState(machineId)) === 'frozen', FREEZE_DEADLINE_MS, FREEZE_POLL_MS);
  }

  async thaw(machineId: string): Promise<void> {
    await this.writeFreeze(machineId, false);
  }

  private async writeFreeze(machineId: string, frozen: boolean): Promise<void> {
    if (this.layout.version === 1) {
      await writeFile(join(this.dir('freezer', machineId), 'freezer.state'), frozen ? 'FROZEN' : 'THAWED');
    } else {
      await writeFile(join(this.dir('', machineId), 'cgroup.freeze'), frozen ? '1' : '0');
    }
  }

  /** Pids of every process in the machine's cgroup (empty when the cgroup does not exist). */
  async pids(machineId: string): Promise<number[]> {
    const all = new Set<number>();
    for (const d of this.dirs(machineId)) {
      try {
        for (const l of (await readFile(join(d, 'cgroup.procs'), 'utf8')).split('\n')) if (l !== '') all.add(Number(l));
      } catch {
        // hierarchy dir absent
      }
    }
    return [...all];
  }

  /** Kills every process of the machine and waits until the cgroup is empty. */
  async killAll(machineId: string): Promise<boolean> {
    const frozen = (await this.freezeState(machineId)) ?? 'thawed';
    const ok = await waitFor(
      async () => {
        const pids = await this.pids(machineId);
        if (pids.length === 0) return true;
        for (const pid of pids) killQuietly(pid, 'SIGKILL');
        // Frozen tasks only act on SIGKILL once thawed.
        if (frozen !== 'thawed') await this.thaw(machineId).catch(() => undefined);
        return false;
      },
      EMPTY_DEADLINE_MS,
      EMPTY_POLL_MS,
    );
    return ok;
  }

  /** Removes the machine's cgroups; they must be empty (killAll first). */
  async remove(machineId: string): Promise<void> {
    for (const d of this.dirs(machineId)) {
      for (let attempt = 0; ; attempt++) {
        try {
          await rmdir(d);
          break;
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          if (code === 'ENOENT') break;
          // EBUSY: a killed task is still being torn down by the kernel.
          if (code === 'EBUSY' && attempt < EMPTY_DEADLINE_MS / EMPTY_POLL_MS) {
            await sleep(EMPTY_POLL_MS);
            continue;
          }
          throw e;
        }
      }
    }
  }

  /**
   * Whether a cgroup can be renamed with its processes in it. Only v1 allows
   * rename(2) on a cgroup directory (within its parent); v2 has no rename.
   */
  get canRename(): boolean {
    return this.layout.version === 1;
  }

  /**
   * Renames `from`'s cgroups to `to` in every hierarchy, processes, limits and
   * all: the warm pool hands a booted sandbox to a machine this way. The
   * sandbox's read-only view of its cgroups and its cgroup namespace follow
   * the directory, not the name. Fails (EEXIST) when `to` already has one.
   */
  renameNow(from: string, to: string): void {
    if (!this.canRename) throw new Error('cgroup v2 cannot rename cgroups');
    // Synchronous like setLimitsNow: a rename in cgroupfs takes microseconds.
    for (const d of this.uniqueScopeDirs()) renameSync(join(d, from), join(d, to));
  }

  /** Names with a cgroup in this scope: machine ids, and warm pool entries (never a valid machine id). */
  async machineIds(): Promise<string[]> {
    const ids = new Set<string>();
    for (const dir of this.uniqueScopeDirs()) {
      try {
        for (const e of await readdir(dir, { withFileTypes: true })) if (e.isDirectory()) ids.add(e.name);
      } catch {
        // scope not created yet
      }
    }
    return [...ids];
  }

  /** Removes the (empty) scope directories; best effort, other runtimes may share the parent. */
  async removeScopeIfEmpty(): Promise<void> {
    for (const dir of this.uniqueScopeDirs()) await rmdir(dir).catch(() => undefined);
  }

  /** Total CPU time used by the machine, in microseconds. */
  async cpuUsageUsec(machineId: string): Promise<number> {
    if (this.layout.version === 1) {
      const acct = this.scopeDirs.get('cpuacct');
      if (acct !== undefined) return Number(await readTrim(join(acct, machineId, 'cpuacct.usage'))) / 1000;
      const stat = await readFile(join(this.dir('cpu', machineId), 'cpu.stat'), 'utf8');
      return Number(/^usage_usec (\d+)$/m.exec(stat)?.[1] ?? NaN);
    }
    const stat = await readFile(join(this.dir('', machineId), 'cpu.stat'), 'utf8');
    return Number(/^usage_usec (\d+)$/m.exec(stat)?.[1] ?? NaN);
  }

  private scopeDir(controller: string): string {
    const d = this.scopeDirs.get(controller);
    if (d === undefined) throw new Error(`cgroup controller ${controller || 'unified'} is not mounted`);
    return d;
  }

  private dir(controller: string, machineId: string): string {
    return join(this.scopeDir(controller), machineId);
  }

  private uniqueScopeDirs(): string[] {
    return [...new Set(this.scopeDirs.values())];
  }
}
