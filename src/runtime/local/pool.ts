/**
 * The warm pool: sandboxes prepared ahead of time, off the request path, so
 * that starting a new machine binds one (sets its limits, renames its cgroups
 * and directory, gives it its hostname) instead of copying and mounting
 * storage and booting. A cold boot is ~60 ms of child processes; binding is a
 * few file operations and one pipe round trip.
 *
 * An entry is everything a fresh machine has: its own ext4 storage image of
 * one size, loop-mounted, with the overlay root on it; its cgroups, named
 * `_pool-<hex>` (never a valid machine id) under idle limits; and a booted
 * sandbox whose init waits on a pipe for its machine's name (sandbox.ts).
 *
 * Layout: <stateDir>/pool/<owner>.owner records the process that prepared
 * the entries in <stateDir>/pool/<owner>/. Several runtimes may share a state
 * dir (replicas, test sweepers), so a runtime only ever removes entries whose
 * owner process is gone. Those entries are found at the next start: their
 * sandboxes have already exited on their own (EOF on the naming pipe), and
 * the sweep removes what is left (cgroups, mounts, files).
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { CgroupLimits, Cgroups } from './cgroups.js';
import type { Logger } from './log.js';
import { pathExists, TRAVERSE_ONLY } from './paths.js';
import { identify, isAlive, type ProcIdentity } from './proc.js';
import { bootClaimable, type BootRecord, type ClaimChannel, type IdRange, type SandboxTools } from './sandbox.js';
import { machinePaths, type MachinePaths, type Storage } from './storage.js';
import { teardownSandbox } from './teardown.js';

/** Pool entries' cgroup and directory names start with this; machine ids cannot. */
export const POOL_ID_PREFIX = '_pool-';
/** Storage size prepared until a machine asks for another (the smallest the API allows). */
const INITIAL_STORAGE_GIB = 1;
/**
 * Limits of an unclaimed entry. Its boot runs inside them, so half a core and
 * half the default CPU weight keep refills from crowding out machines and
 * requests; the idle sandbox needs a few MiB.
 */
const IDLE_VCPU = 0.5;
const IDLE_MEMORY_MIB = 64;
/** Refilling waits this long after an entry is taken, so it does not compete with that machine's start. */
const REFILL_DELAY_MS = 25;
/** After a failed preparation (host trouble), retry with backoff rather than spin. */
const RETRY_BASE_MS = 1_000;
const RETRY_CAP_MS = 30_000;
const ENTRY_FILE = 'entry.json';

export interface PoolEntry {
  /** Its cgroups' and directory's name until it is claimed. */
  readonly id: string;
  readonly paths: MachinePaths;
  readonly storageGib: number;
  readonly boot: BootRecord;
  /** The boot's process, so node reaps it when it exits. */
  readonly child: ChildProcess;
  readonly channel: ClaimChannel;
}

/** What is recorded next to an entry, for the sweep after a crash. */
interface EntryFile {
  readonly storageGib: number;
  readonly boot: BootRecord;
}

export interface WarmPoolOptions {
  /** Entries kept ready; 0 disables the pool. */
  readonly size: number;
  /** <stateDir>/pool */
  readonly dir: string;
  readonly cgroups: Cgroups;
  readonly storage: Storage;
  readonly tools: SandboxTools;
  readonly ids: IdRange;
  readonly imageDir: string;
  readonly busybox: string;
  readonly pidsMax: number;
  readonly logger: Logger;
}

export interface PoolStats {
  /** Entries of `storageGib` ready to be claimed. */
  readonly ready: number;
  /** Entries of other sizes, kept until they are replaced. */
  readonly otherSizes: number;
  /** The storage size being prepared (that of the latest new machine). */
  readonly storageGib: number;
  readonly hits: number;
  readonly misses: number;
}

export class WarmPool {
  private readonly ready: PoolEntry[] = [];
  /** How the pool notices a ready entry's sandbox dying; removed when the entry is taken. */
  private readonly exitWatch = new Map<string, () => void>();
  private storageGib = INITIAL_STORAGE_GIB;
  private filling: Promise<void> | null = null;
  /** Teardowns in flight (entries replaced, lost, or discarded), so close() can wait for them. */
  private readonly retiring = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | null = null;
  private failures = 0;
  private hits = 0;
  private misses = 0;
  private closed = false;

  private constructor(
    private readonly opts: WarmPoolOptions,
    /** <dir>/<token>: this runtime's entries. */
    private readonly ownDir: string,
  ) {}

  /**
   * Sweeps what dead owners left in the pool directory, then registers this
   * process as an owner. Call start() to begin filling.
   */
  static async open(opts: WarmPoolOptions): Promise<WarmPool> {
    await mkdir(opts.dir, { recursive: true, mode: TRAVERSE_ONLY });
    await WarmPool.sweep(opts);
    const me = await identify(process.pid);
    if (me === null) throw new Error('cannot read this process\'s own start time');
    const token = randomBytes(6).toString('hex');
    // The owner file exists before the entries' directory, so a sweep never sees ownerless entries of a live runtime.
    const ownerFile = join(opts.dir, `${token}.owner`);
    await writeFile(`${ownerFile}.tmp`, JSON.stringify(me));
    await rename(`${ownerFile}.tmp`, ownerFile);
    const ownDir = join(opts.dir, token);
    await mkdir(ownDir, { mode: TRAVERSE_ONLY });
    return new WarmPool(opts, ownDir);
  }

  /**
   * Removes the entries of owners that are gone (a killed controlplane): their
   * sandboxes, if any still run, then cgroups, mounts and files. Entries of
   * live owners (another runtime on this state dir) are left alone. Also run
   * with the pool disabled, so turning it off leaves nothing behind either.
   */
  static async sweep(opts: WarmPoolOptions): Promise<void> {
    await sweepStale(opts);
  }

  start(): void {
    this.kick(0);
  }

  stats(): PoolStats {
    const ready = this.ready.filter((e) => e.storageGib === this.storageGib).length;
    return { ready, otherSizes: this.ready.length - ready, storageGib: this.storageGib, hits: this.hits, misses: this.misses };
  }

  /**
   * Hands out a ready entry of exactly `storageGib` (storage is never resized
   * here: growing ext4 online needs privileges some hosts withhold), or null.
   * Either way the pool now prepares that size: demand follows the latest
   * machine.
   */
  take(storageGib: number): PoolEntry | null {
    if (this.closed) return null;
    this.storageGib = storageGib;
    const i = this.ready.findIndex((e) => e.storageGib === storageGib);
    const entry = i < 0 ? undefined : this.ready.splice(i, 1)[0];
    if (entry === undefined) {
      this.misses++;
      this.kick(REFILL_DELAY_MS);
      return null;
    }
    this.hits++;
    const onExit = this.exitWatch.get(entry.id);
    if (onExit !== undefined) entry.child.off('exit', onExit);
    this.exitWatch.delete(entry.id);
    this.kick(REFILL_DELAY_MS);
    return entry;
  }

  /** Removes an entry that was taken but could not be bound to its machine. */
  async discard(entry: PoolEntry): Promise<void> {
    entry.channel.close();
    const done = teardownSandbox(this.opts, entry.id, entry.paths, entry.boot);
    this.retiring.add(done);
    try {
      await done;
    } finally {
      this.retiring.delete(done);
    }
  }

  /** Stops filling and removes every entry: nothing of the pool is left on the host. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    await this.filling;
    const entries = this.ready.splice(0);
    const results = await Promise.allSettled([...entries.map((e) => this.retire(e)), ...this.retiring]);
    for (const r of results) if (r.status === 'rejected') this.opts.logger.warn({ err: r.reason }, 'local runtime: a pool entry could not be removed');
    await rm(this.ownDir, { recursive: true, force: true });
    await rm(`${this.ownDir}.owner`, { force: true });
  }

  // --- internals -----------------------------------------------------------

  private kick(delayMs: number): void {
    if (this.closed || this.timer !== null || this.opts.size <= 0) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.filling !== null || this.closed) return;
      this.filling = this.fill().finally(() => {
        this.filling = null;
      });
    }, delayMs);
    this.timer.unref();
  }

  /** One entry at a time: a refill never takes more than one boot's worth of the host at once. */
  private async fill(): Promise<void> {
    while (!this.closed) {
      if (this.ready.length >= this.opts.size) {
        // Full: replace an entry of a size nobody asks for any more (it would only ever miss).
        const stale = this.ready.findIndex((e) => e.storageGib !== this.storageGib);
        if (stale < 0) return;
        const [old] = this.ready.splice(stale, 1);
        if (old !== undefined) await this.retire(old).catch((err: unknown) => this.opts.logger.warn({ err }, 'local runtime: a pool entry could not be removed'));
        continue;
      }
      let entry: PoolEntry;
      try {
        entry = await this.prepare(this.storageGib);
      } catch (err) {
        this.failures++;
        const delay = Math.min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** (this.failures - 1));
        this.opts.logger.warn({ err, retryInMs: delay }, 'local runtime: preparing a pool entry failed');
        this.kick(delay);
        return;
      }
      this.failures = 0;
      if (this.closed) {
        await this.retire(entry);
        return;
      }
      this.ready.push(entry);
    }
  }

  private async prepare(storageGib: number): Promise<PoolEntry> {
    const { cgroups, storage } = this.opts;
    const id = `${POOL_ID_PREFIX}${randomBytes(6).toString('hex')}`;
    const paths = machinePaths(join(this.ownDir, id));
    try {
      await mkdir(paths.dir, { mode: TRAVERSE_ONLY });
      await storage.ensureImage(paths, storageGib);
      await storage.ensureMounted(paths, this.opts.imageDir);
      await cgroups.create(id, this.idleLimits());
      const { record, child, channel } = await bootClaimable(this.opts.tools, {
        // A placeholder until claimed; the entry id would tell the machine nothing useful.
        hostname: 'localhost',
        rootfs: paths.rootfs,
        busybox: this.opts.busybox,
        cgroupProcs: cgroups.procsFiles(id),
        cgroupVisible: cgroups.visibleDirs(id),
        ids: this.opts.ids,
        consoleLog: join(paths.dir, 'console.log'),
      });
      const entry: PoolEntry = { id, paths, storageGib, boot: record, child, channel };
      const file: EntryFile = { storageGib, boot: record };
      await writeFile(join(paths.dir, ENTRY_FILE), JSON.stringify(file));
      const onExit = () => void this.lost(entry);
      this.exitWatch.set(id, onExit);
      child.once('exit', onExit);
      return entry;
    } catch (e) {
      await teardownSandbox(this.opts, id, paths, null).catch((err: unknown) =>
        this.opts.logger.warn({ entry: id, err }, 'local runtime: could not remove a pool entry that failed to boot'),
      );
      throw e;
    }
  }

  /** A ready entry's sandbox died (killed from outside, OOM): drop it and make another. */
  private async lost(entry: PoolEntry): Promise<void> {
    const i = this.ready.indexOf(entry);
    if (i < 0) return;
    this.ready.splice(i, 1);
    this.opts.logger.warn({ entry: entry.id }, 'local runtime: a pool sandbox exited; replacing it');
    await this.retire(entry).catch((err: unknown) => this.opts.logger.warn({ err }, 'local runtime: a pool entry could not be removed'));
    this.kick(REFILL_DELAY_MS);
  }

  private async retire(entry: PoolEntry): Promise<void> {
    const onExit = this.exitWatch.get(entry.id);
    if (onExit !== undefined) entry.child.off('exit', onExit);
    this.exitWatch.delete(entry.id);
    await this.discard(entry);
  }

  private idleLimits(): CgroupLimits {
    return { vcpu: IDLE_VCPU, memoryMib: IDLE_MEMORY_MIB, pidsMax: this.opts.pidsMax };
  }
}

async function sweepStale(opts: WarmPoolOptions): Promise<void> {
  let names: string[];
  try {
    names = await readdir(opts.dir);
  } catch {
    return;
  }
  const owners = new Set(names.filter((n) => n.endsWith('.owner')).map((n) => n.slice(0, -'.owner'.length)));
  for (const name of names) {
    if (name.endsWith('.owner') || name.endsWith('.tmp')) continue;
    const owner = owners.has(name) ? await readJson<ProcIdentity>(join(opts.dir, `${name}.owner`)) : null;
    if (owner !== null && (await isAlive(owner))) continue;
    const dir = join(opts.dir, name);
    let failed = false;
    let entries: string[] = [];
    try {
      entries = await readdir(dir);
    } catch {
      // not a directory: nothing of ours
    }
    for (const id of entries) {
      if (!id.startsWith(POOL_ID_PREFIX)) continue;
      const paths = machinePaths(join(dir, id));
      const recorded = await readJson<EntryFile>(join(paths.dir, ENTRY_FILE));
      opts.logger.info({ entry: id }, 'local runtime: removing a pool entry left by a controlplane that is gone');
      try {
        await teardownSandbox(opts, id, paths, recorded?.boot ?? null);
      } catch (err) {
        // Never a reason not to start: the next start sweeps again.
        opts.logger.warn({ entry: id, err }, 'local runtime: could not remove a stale pool entry');
        failed = true;
      }
    }
    if (failed) continue;
    await rm(dir, { recursive: true, force: true });
    await rm(`${dir}.owner`, { force: true });
  }
  // Owner files whose directory is gone (a sweep interrupted between the two removals).
  for (const token of owners) {
    if (names.includes(token) || !(await pathExists(join(opts.dir, `${token}.owner`)))) continue;
    const owner = await readJson<ProcIdentity>(join(opts.dir, `${token}.owner`));
    if (owner === null || !(await isAlive(owner))) await rm(join(opts.dir, `${token}.owner`), { force: true });
  }
}

async function readJson<T>(file: string): Promise<T | null> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as T;
  } catch {
    return null;
  }
}
