/**
 * The `local` runtime: every machine is an isolated Linux sandbox on this
 * host (namespaces + user namespace via unshare/bubblewrap, cgroup limits,
 * an overlay root on its own size-capped ext4 storage). See
 * docs/local-runtime.md for the design.
 *
 * All state needed to find sandboxes again lives in <stateDir>/machines/<id>/
 * (machine.json: sizes and the pids of the boot), so a restarted controlplane
 * recovers them; the sandboxes themselves never depend on this process.
 */
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, realpath, rename, stat, statfs, writeFile } from 'node:fs/promises';
import { cpus, hostname, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import type { Host } from '../../domain/placement.js';
import type { Sizes } from '../../domain/types.js';
import type { ExecHandle, ExecRequest, ExecRuntime, Observation, OutputListener, Runtime, SandboxSpec } from '../runtime.js';
import { RuntimeError } from '../runtime.js';
import { Cgroups, type CgroupLimits } from './cgroups.js';
import { startExec } from './exec.js';
import { NOOP_LOGGER, type Logger } from './log.js';
import { pathExists, TRAVERSE_ONLY } from './paths.js';
import { WarmPool, type PoolEntry, type PoolStats } from './pool.js';
import { isAlive } from './proc.js';
import { ensureBusyboxImage, ensureTools, imageOwner } from './rootfs.js';
import { boot, BootError, type BootRecord } from './sandbox.js';
import { machinePaths, pathProblem, Storage, type MachinePaths } from './storage.js';
import { probeLocalEnvironment, type LocalEnvironment } from './support.js';
import { teardownSandbox } from './teardown.js';
import { sizesEqual } from '../../domain/sizes.js';

export type { Logger } from './log.js';
export type { PoolStats } from './pool.js';

/** How often sandboxes are checked for a dead init (the exit of ones we booted is noticed at once). */
const EXIT_POLL_MS = 1_000;
const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
/** Process limit per machine: generous for real work, a wall against fork bombs. */
const DEFAULT_PIDS_MAX = 4_096;
const DEFAULT_RESERVE: Sizes = { vcpu: 0, memoryMib: 512, storageGib: 5 };
/** Machine ids become directory, cgroup and host names. */
const MACHINE_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
/** Warm pool entries kept ready by default: enough for back-to-back creates on a small host. */
export const DEFAULT_POOL_SIZE = 2;

export interface LocalRuntimeOptions {
  /** Where images, machine storage and state live. Must be on a local filesystem. */
  readonly stateDir: string;
  /** Host resources kept for the host itself (subtracted from the capacity offered). */
  readonly reserve?: { vcpu: number; memoryMib: number; storageGib: number };
  readonly logger?: Logger;
  /**
   * Base image directory (read-only lower layer of every machine's root).
   * Default: a busybox image built once at <stateDir>/images/busybox. For a
   * debootstrap minbase see docs/local-runtime.md.
   */
  readonly imageDir?: string;
  /** Host id reported by hosts(); default local-<hostname>. */
  readonly hostId?: string;
  readonly pidsMax?: number;
  /**
   * Sandboxes kept booted ahead of time, so that a new machine starts by
   * binding one instead of booting (see pool.ts). 0 disables the pool; it is
   * also off on cgroup v2, which cannot rename a cgroup. Default 2.
   */
  readonly poolSize?: number;
}

interface MachineRecord {
  readonly machineId: string;
  readonly hostId: string;
  readonly sizes: Sizes;
  /** Size of the storage filesystem itself; below sizes.storageGib while a grow is deferred. */
  readonly fsGib: number;
  readonly boot: BootRecord | null;
  /** The current boot is a warm pool entry bound to this machine. */
  readonly pooled?: boolean;
}

/** Diagnostics (tests, support): where a machine lives on the host. */
export interface SandboxInfo {
  readonly initPid: number;
  readonly monitorPid: number;
  readonly machineDir: string;
  readonly cgroupDirs: readonly string[];
  /** The current boot came from the warm pool. */
  readonly pooled: boolean;
}

function wrap(e: unknown, what: string): RuntimeError {
  if (e instanceof RuntimeError) return e;
  const msg = e instanceof Error ? e.message : String(e);
  return new RuntimeError(`${what}: ${msg}`, { retryable: true, reason: e instanceof BootError ? 'BootFailed' : undefined });
}

export class LocalRuntime implements Runtime, ExecRuntime {
  readonly kind = 'local';
  readonly hostId: string;
  private readonly machinesDir: string;
  private readonly capacity: Sizes;
  private readonly listeners: ((machineId: string) => void)[] = [];
  /** Machines whose init we believe alive: checked by the exit poller. */
  private readonly watched = new Map<string, BootRecord>();
  /** Per-machine queue: operations on one machine never interleave. */
  private readonly locks = new Map<string, Promise<unknown>>();
  /** Children we booted, kept only so node reaps them when they exit. */
  private readonly children = new Map<string, ChildProcess>();
  private readonly poller: NodeJS.Timeout;
  private polling = false;
  private closed = false;

  constructor(
    private readonly env: LocalEnvironment,
    private readonly cgroups: Cgroups,
    private readonly storage: Storage,
    private readonly imageDir: string,
    private readonly busybox: string,
    stateDir: string,
    capacity: Sizes,
    private readonly logger: Logger,
    hostId: string,
    private readonly pidsMax: number,
    /** null: disabled. */
    private readonly pool: WarmPool | null,
  ) {
    this.machinesDir = join(stateDir, 'machines');
    this.capacity = capacity;
    this.hostId = hostId;
    this.poller = setInterval(() => void this.pollExits(), EXIT_POLL_MS);
    this.poller.unref();
    this.pool?.start();
  }

  async hosts(): Promise<Host[]> {
    return [{ hostId: this.hostId, capacity: this.capacity, ready: !this.closed }];
  }

  async start(spec: SandboxSpec): Promise<void> {
    this.checkSpec(spec);
    await this.locked(spec.machineId, async () => {
      try {
        const rec = await this.readRecord(spec.machineId);
        if (rec?.boot && (await isAlive(rec.boot.init))) {
          if (!sizesEqual(rec.sizes, spec.sizes)) await this.applySizes(rec, spec.sizes);
          if ((await this.cgroups.freezeState(spec.machineId)) !== 'thawed') await this.cgroups.thaw(spec.machineId);
          this.watched.set(spec.machineId, rec.boot);
          return;
        }
        if (rec === null && (await this.startFromPool(spec))) return;
        await this.coldBoot(spec);
      } catch (e) {
        throw wrap(e, `starting ${spec.machineId}`);
      }
    });
  }

  async stop(machineId: string): Promise<void> {
    await this.locked(machineId, async () => {
      await this.requireAlive(machineId);
      let frozen: boolean;
      try {
        frozen = await this.cgroups.freeze(machineId);
      } catch (e) {
        throw wrap(e, `freezing ${machineId}`);
      }
      if (!frozen) {
        // Leave it consistently running rather than half frozen; the reconciler retries.
        await this.cgroups.thaw(machineId).catch(() => undefined);
        throw new RuntimeError(`${machineId} did not freeze in time`, { retryable: true, reason: 'FreezeTimeout' });
      }
    });
  }

  async resize(spec: SandboxSpec): Promise<void> {
    this.checkSpec(spec);
    await this.locked(spec.machineId, async () => {
      const rec = await this.requireAlive(spec.machineId);
      try {
        await this.applySizes(rec, spec.sizes);
      } catch (e) {
        throw wrap(e, `resizing ${spec.machineId}`);
      }
    });
  }

  async destroy(machineId: string): Promise<void> {
    if (!MACHINE_ID.test(machineId)) return; // nothing of ours can carry such a name
    await this.locked(machineId, async () => {
      try {
        await this.teardown(machineId);
      } catch (e) {
        throw wrap(e, `destroying ${machineId}`);
      }
    });
  }

  async inspect(machineId: string, hostId: string): Promise<Observation> {
    const hostGone = hostId !== this.hostId;
    if (!MACHINE_ID.test(machineId)) return { state: 'absent', hostGone };
    const rec = await this.readRecord(machineId);
    if (rec?.boot == null) return { state: 'absent', hostGone };
    if (!(await isAlive(rec.boot.init))) return { state: 'absent', hostGone, detail: 'sandbox init has exited' };
    const fs = await this.cgroups.freezeState(machineId);
    if (fs === null) return { state: 'absent', hostGone, detail: 'sandbox cgroup is missing' };
    return { state: fs === 'frozen' ? 'sleeping' : 'running', hostGone };
  }

  async recover(expected: readonly { machineId: string; hostId: string; state: 'running' | 'sleeping'; sizes: Sizes }[]): Promise<void> {
    const known = new Map(expected.filter((e) => e.hostId === this.hostId).map((e) => [e.machineId, e]));
    const onDisk = await this.machineIds();
    const inCgroups = await this.cgroups.machineIds();
    // Pool entries (not valid machine ids) are the pool's own business.
    for (const id of new Set([...onDisk, ...inCgroups].filter((i) => MACHINE_ID.test(i)))) {
      if (!known.has(id)) {
        this.logger.info({ machineId: id }, 'local runtime: removing a sandbox the store does not know');
        await this.destroy(id);
        continue;
      }
      await this.locked(id, async () => {
        const rec = await this.readRecord(id);
        if (rec?.boot && (await isAlive(rec.boot.init))) {
          this.watched.set(id, rec.boot);
        } else {
          // Init gone: whatever is left in the cgroup is an orphan of that boot.
          await this.cgroups.killAll(id);
        }
      });
    }
  }

  onSandboxExit(listener: (machineId: string) => void): void {
    this.listeners.push(listener);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.poller);
    await Promise.allSettled([...this.locks.values()]);
    await this.pool?.close();
    this.watched.clear();
    this.children.clear();
    await this.cgroups.removeScopeIfEmpty();
  }

  async exec(machineId: string, req: ExecRequest, onOutput: OutputListener): Promise<ExecHandle> {
    const rec = MACHINE_ID.test(machineId) ? await this.readRecord(machineId) : null;
    const alive = rec?.boot != null && (await isAlive(rec.boot.init));
    if (!alive || rec?.boot == null) throw new RuntimeError(`machine ${machineId} is not running`, { retryable: false, reason: 'MachineNotRunning' });
    if ((await this.cgroups.freezeState(machineId)) !== 'thawed') {
      throw new RuntimeError(`machine ${machineId} is asleep`, { retryable: false, reason: 'MachineNotRunning' });
    }
    return startExec(this.env.tools, { initPid: rec.boot.init.pid, cgroupProcs: this.cgroups.procsFiles(machineId) }, req, onOutput);
  }

  /** Where a machine's sandbox lives on the host; null when it has none. */
  async sandboxInfo(machineId: string): Promise<SandboxInfo | null> {
    const rec = MACHINE_ID.test(machineId) ? await this.readRecord(machineId) : null;
    if (rec?.boot == null) return null;
    return {
      initPid: rec.boot.init.pid,
      monitorPid: rec.boot.monitor.pid,
      machineDir: join(this.machinesDir, machineId),
      cgroupDirs: this.cgroups.dirs(machineId),
      pooled: rec.pooled === true,
    };
  }

  /** The warm pool's state (diagnostics, tests); null when it is disabled. */
  poolStats(): PoolStats | null {
    return this.pool?.stats() ?? null;
  }

  /** CPU time the machine has used, in microseconds (metrics, tests). */
  async cpuUsageUsec(machineId: string): Promise<number> {
    return this.cgroups.cpuUsageUsec(machineId);
  }

  // --- internals -----------------------------------------------------------

  /** Starts a new machine on a warm pool entry of its storage size; false when there is none or binding failed. */
  private async startFromPool(spec: SandboxSpec): Promise<boolean> {
    if (this.pool === null) return false;
    // Anything on disk for this id (a crashed boot or destroy) is the cold path's to deal with.
    if (await pathExists(this.paths(spec.machineId).dir)) return false;
    const entry = this.pool.take(spec.sizes.storageGib);
    if (entry === null) return false;
    try {
      await this.bind(entry, spec);
      return true;
    } catch (e) {
      this.logger.warn({ machineId: spec.machineId, entry: entry.id, err: e }, 'local runtime: binding a pool entry failed; booting cold');
      // Kills the entry's sandbox by pid, whatever its cgroups are called by now; the cold
      // boot then empties and reuses any cgroup already renamed to the machine.
      await this.pool.discard(entry).catch((err: unknown) => this.logger.warn({ entry: entry.id, err }, 'local runtime: removing a pool entry failed'));
      return false;
    }
  }

  /**
   * Makes a pool entry the machine's: its limits, its cgroups' name, its
   * hostname, its record and directory. The sandbox's own view follows: its
   * cgroup bind mounts and root are directories, not names.
   */
  private async bind(entry: PoolEntry, spec: SandboxSpec): Promise<void> {
    const id = spec.machineId;
    // The sandbox takes its hostname while we do the rest.
    const named = entry.channel.claim(id);
    named.catch(() => undefined); // awaited below; a failure must not go unhandled while we work
    // Synchronous on purpose: a handful of cgroupfs writes and renames that never wait on
    // anything (see Cgroups.setLimitsNow); async, their round trips were most of the bind.
    this.cgroups.setLimitsNow(entry.id, this.limits(spec.sizes));
    this.cgroups.renameNow(entry.id, id);
    const rec: MachineRecord = { machineId: id, hostId: spec.hostId, sizes: spec.sizes, fsGib: entry.storageGib, boot: entry.boot, pooled: true };
    // Recorded inside the entry's directory, which is then renamed into place (mounts and
    // all): the machine's directory appears complete or not at all.
    await writeFile(join(entry.paths.dir, 'machine.json'), JSON.stringify(rec));
    await named;
    await rename(entry.paths.dir, this.paths(id).dir);
    this.watch(id, entry.boot, entry.child);
  }

  private watch(machineId: string, record: BootRecord, child: ChildProcess): void {
    this.watched.set(machineId, record);
    this.children.set(machineId, child);
    child.once('exit', () => {
      if (this.children.get(machineId) === child) this.children.delete(machineId);
      void this.checkExit(machineId, record);
    });
  }

  private async coldBoot(spec: SandboxSpec): Promise<void> {
    const id = spec.machineId;
    const paths = this.paths(id);
    // A previous boot's leftovers (exec'd processes of a dead sandbox) must not linger: no duplicates.
    await this.cgroups.killAll(id);
    await mkdir(paths.dir, { recursive: true, mode: TRAVERSE_ONLY });
    const prev = await this.readRecord(id);
    const storageGib = Math.max(spec.sizes.storageGib, prev?.sizes.storageGib ?? 0);
    const sizes = { ...spec.sizes, storageGib };
    if (prev !== null && prev.fsGib < storageGib) await this.storage.growOffline(paths, storageGib);
    else await this.storage.ensureImage(paths, storageGib);
    await this.storage.ensureMounted(paths, this.imageDir);
    await this.cgroups.create(id, this.limits(sizes));
    await this.cgroups.thaw(id);
    await this.writeRecord({ machineId: id, hostId: spec.hostId, sizes, fsGib: storageGib, boot: null });
    const { record, child } = await boot(this.env.tools, {
      hostname: id,
      rootfs: paths.rootfs,
      busybox: this.busybox,
      cgroupProcs: this.cgroups.procsFiles(id),
      cgroupVisible: this.cgroups.visibleDirs(id),
      ids: this.env.ids,
      consoleLog: join(paths.dir, 'console.log'),
    });
    await this.writeRecord({ machineId: id, hostId: spec.hostId, sizes, fsGib: storageGib, boot: record });
    this.watch(id, record, child);
  }

  private async teardown(machineId: string): Promise<void> {
    this.watched.delete(machineId);
    this.children.delete(machineId);
    const boot = (await this.readRecord(machineId))?.boot ?? null;
    await teardownSandbox({ cgroups: this.cgroups, storage: this.storage }, machineId, this.paths(machineId), boot);
  }

  private async applySizes(rec: MachineRecord, sizes: Sizes): Promise<void> {
    await this.cgroups.setLimits(rec.machineId, this.limits(sizes));
    // Storage only grows (the API refuses to shrink it).
    const storageGib = Math.max(sizes.storageGib, rec.sizes.storageGib);
    let fsGib = rec.fsGib;
    if (storageGib > rec.fsGib) {
      const grown = await this.storage.grow(this.paths(rec.machineId), storageGib);
      if (grown === 'done') fsGib = storageGib;
      else {
        this.logger.warn(
          { machineId: rec.machineId, storageGib, fsGib },
          'local runtime: this host does not allow online ext4 resize (no CAP_SYS_RESOURCE); storage grows at the next cold boot',
        );
      }
    }
    await this.writeRecord({ ...rec, sizes: { ...sizes, storageGib }, fsGib });
  }

  private limits(sizes: Sizes): CgroupLimits {
    return { vcpu: sizes.vcpu, memoryMib: sizes.memoryMib, pidsMax: this.pidsMax };
  }

  private async requireAlive(machineId: string): Promise<MachineRecord> {
    const rec = MACHINE_ID.test(machineId) ? await this.readRecord(machineId) : null;
    if (rec?.boot == null || !(await isAlive(rec.boot.init))) {
      throw new RuntimeError('sandbox not found', { retryable: true, reason: 'SandboxLost' });
    }
    return rec;
  }

  private checkSpec(spec: SandboxSpec): void {
    if (!MACHINE_ID.test(spec.machineId)) {
      throw new RuntimeError(`machine id ${JSON.stringify(spec.machineId)} cannot name a sandbox`, { retryable: false, reason: 'InvalidMachineId' });
    }
    if (spec.hostId !== this.hostId) {
      throw new RuntimeError(`host ${spec.hostId} is not this host (${this.hostId})`, { retryable: true, reason: 'HostLost' });
    }
    if (this.closed) throw new RuntimeError('the local runtime is closed', { retryable: true, reason: 'RuntimeClosed' });
  }

  private locked<T>(machineId: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(machineId) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.locks.set(machineId, tail);
    void tail.then(() => {
      if (this.locks.get(machineId) === tail) this.locks.delete(machineId);
    });
    return next;
  }

  private async pollExits(): Promise<void> {
    if (this.polling || this.closed) return;
    this.polling = true;
    try {
      for (const [id, record] of [...this.watched]) await this.checkExit(id, record);
    } finally {
      this.polling = false;
    }
  }

  private async checkExit(machineId: string, record: BootRecord): Promise<void> {
    if (this.watched.get(machineId) !== record || this.locks.has(machineId)) return;
    if (await isAlive(record.init)) return;
    // Re-check: an operation may have taken the machine over while we looked.
    if (this.watched.get(machineId) !== record) return;
    this.watched.delete(machineId);
    this.logger.warn({ machineId }, 'local runtime: sandbox init exited');
    for (const l of this.listeners) {
      try {
        l(machineId);
      } catch (e) {
        this.logger.warn({ machineId, err: e }, 'local runtime: sandbox exit listener failed');
      }
    }
  }

  private paths(machineId: string): MachinePaths {
    return machinePaths(join(this.machinesDir, machineId));
  }

  private async machineIds(): Promise<string[]> {
    try {
      return (await readdir(this.machinesDir, { withFileTypes: true })).filter((e) => e.isDirectory() && MACHINE_ID.test(e.name)).map((e) => e.name);
    } catch {
      return [];
    }
  }

  private async readRecord(machineId: string): Promise<MachineRecord | null> {
    try {
      return JSON.parse(await readFile(join(this.machinesDir, machineId, 'machine.json'), 'utf8')) as MachineRecord;
    } catch {
      return null;
    }
  }

  private async writeRecord(rec: MachineRecord): Promise<void> {
    const file = join(this.machinesDir, rec.machineId, 'machine.json');
    await writeFile(`${file}.tmp`, JSON.stringify(rec));
    await rename(`${file}.tmp`, file);
  }
}

/** Builds the local runtime: checks the host, prepares images and cgroups. Throws with the reason when the host cannot. */
export async function createLocalRuntime(opts: LocalRuntimeOptions): Promise<LocalRuntime> {
  const logger = opts.logger ?? NOOP_LOGGER;
  const env = await probeLocalEnvironment();
  if ('reason' in env) throw new Error(`local runtime unavailable: ${env.reason}`);
  await mkdir(opts.stateDir, { recursive: true });
  const stateDir = await realpath(opts.stateDir);
  const problem = pathProblem(stateDir);
  if (problem !== null) throw new Error(`local runtime: state dir ${problem}`);
  const imagesDir = join(stateDir, 'images');
  await mkdir(join(stateDir, 'machines'), { recursive: true });
  await mkdir(join(imagesDir, 'tools'), { recursive: true });
  // The sandbox's setup runs as its unprivileged host uid and must walk down to the machine's
  // root filesystem and to the tools: search (x) permission only, nothing readable.
  for (const d of [stateDir, join(stateDir, 'machines'), imagesDir, join(imagesDir, 'tools')]) await chmod(d, TRAVERSE_ONLY);
  for (let d = dirname(stateDir); ; d = dirname(d)) {
    if (((await stat(d)).mode & 0o001) === 0) throw new Error(`local runtime: ${d} must be searchable by others (chmod o+x) for the sandboxes to reach ${stateDir}`);
    if (d === dirname(d)) break;
  }

  const busybox = await ensureTools(imagesDir, env.tools.busybox);
  let imageDir: string;
  if (opts.imageDir === undefined) {
    imageDir = await ensureBusyboxImage(imagesDir, env.tools.busybox, env.ids.start);
  } else {
    imageDir = await realpath(opts.imageDir);
    const imgProblem = pathProblem(imageDir);
    if (imgProblem !== null) throw new Error(`local runtime: image dir ${imgProblem}`);
    const owner = await imageOwner(imageDir);
    if (owner !== env.ids.start) {
      logger.warn(
        { imageDir, owner, sandboxRoot: env.ids.start },
        'local runtime: image is not owned by the sandbox root id; root in a machine will not be able to modify image files (see docs/local-runtime.md)',
      );
    }
  }

  // Scoped by state dir: two runtimes on one host never see each other's cgroups.
  const scope = createHash('sha256').update(stateDir).digest('hex').slice(0, 12);
  const cgroups = new Cgroups(env.cgroups, scope);
  await cgroups.init();
  const storage = new Storage(env.tools, join(imagesDir, 'ext4'), env.ids.start);

  const reserve = opts.reserve ?? DEFAULT_RESERVE;
  const fsStats = await statfs(stateDir);
  const capacity: Sizes = {
    vcpu: Math.max(0, cpus().length - reserve.vcpu),
    memoryMib: Math.max(0, Math.floor(totalmem() / MIB) - reserve.memoryMib),
    storageGib: Math.max(0, Math.floor((fsStats.blocks * fsStats.bsize) / GIB) - reserve.storageGib),
  };
  const hostId = opts.hostId ?? `local-${hostname()}`;
  const pidsMax = opts.pidsMax ?? DEFAULT_PIDS_MAX;
  let poolSize = opts.poolSize ?? DEFAULT_POOL_SIZE;
  if (poolSize > 0 && !cgroups.canRename) {
    logger.info('local runtime: the warm pool is off on cgroup v2 (no cgroup rename); every start boots cold');
    poolSize = 0;
  }
  const poolOptions = {
    size: poolSize,
    dir: join(stateDir, 'pool'),
    cgroups,
    storage,
    tools: env.tools,
    ids: env.ids,
    imageDir,
    busybox,
    pidsMax,
    logger,
  };
  // Swept even when disabled: what a killed controlplane's pool left behind goes either way.
  const pool = poolSize > 0 ? await WarmPool.open(poolOptions) : (await WarmPool.sweep(poolOptions), null);
  logger.info(
    { hostId, cgroupVersion: cgroups.version, capacity, imageDir, stateDir, poolSize },
    'local runtime ready',
  );
  return new LocalRuntime(env, cgroups, storage, imageDir, busybox, stateDir, capacity, logger, hostId, pidsMax, pool);
}
