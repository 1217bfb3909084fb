/**
 * A machine's persistent storage: a sparse ext4 image file of exactly
 * storage_gib, loop-mounted on the host. It holds the upper layer of the
 * machine's overlay root filesystem, so everything the machine writes
 * (/root, /etc, installed packages) is counted against its size and survives
 * sleep, wake and controlplane restarts. Grown online (resize2fs) on resize.
 *
 * Formatting is done once per size into a template (<images>/ext4/<n>g.img);
 * a machine's image is a sparse copy of it, which takes a few milliseconds
 * where mkfs takes tens.
 */
import { randomBytes } from 'node:crypto';
import { chmod, chown, mkdir, open, readdir, readFile, rename, rm, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { readMounts, type MountEntry } from './mountinfo.js';
import { run, runOk, waitFor } from './proc.js';
import { pathExists } from './paths.js';

const GIB = 1024 * 1024 * 1024;
const LOOP_DETACH_DEADLINE_MS = 5_000;
const LOOP_DETACH_POLL_MS = 5;

export interface StorageTools {
  readonly cp: string;
  readonly mkfs: string;
  readonly mount: string;
  readonly umount: string;
  readonly losetup: string;
  readonly resize2fs: string;
  readonly sh: string;
}

/** Paths of one machine's storage and root filesystem. */
export interface MachinePaths {
  readonly dir: string;
  readonly image: string;
  /** Where the ext4 image is mounted on the host. */
  readonly storage: string;
  /** Where the overlay root (image + storage/upper) is mounted on the host. */
  readonly rootfs: string;
}

export function machinePaths(machineDir: string): MachinePaths {
  return {
    dir: machineDir,
    image: join(machineDir, 'storage.img'),
    storage: join(machineDir, 'storage'),
    rootfs: join(machineDir, 'rootfs'),
  };
}

/** Characters that would break mount option strings (overlay's lowerdir=...,upperdir=...). */
export function pathProblem(p: string): string | null {
  return /[,:\s\\]/.test(p) ? `path ${JSON.stringify(p)} must not contain commas, colons, spaces or backslashes` : null;
}

export class Storage {
  constructor(
    private readonly tools: StorageTools,
    private readonly templatesDir: string,
    /** Host uid/gid that is root inside the sandboxes. */
    private readonly rootId: number,
  ) {}

  /** Formats the template for `gib` once: ext4 with upper/ and work/ owned by sandbox root. */
  private async template(gib: number): Promise<string> {
    const target = join(this.templatesDir, `${gib}g.img`);
    if (await pathExists(target)) return target;
    await mkdir(this.templatesDir, { recursive: true });
    const tag = randomBytes(4).toString('hex');
    const tmp = `${target}.tmp-${tag}`;
    const skel = join(this.templatesDir, `skel-${tag}`);
    try {
      for (const d of ['upper', 'work']) {
        await mkdir(join(skel, d), { recursive: true });
        await chown(join(skel, d), this.rootId, this.rootId);
      }
      await truncate(await touch(tmp), gib * GIB);
      // Only host root reads machine disks (copies inherit this mode).
      await chmod(tmp, 0o600);
      await runOk(this.tools.mkfs, [
        '-q', '-F', '-m', '0', '-L', 'hangar',
        '-E', `lazy_itable_init=1,lazy_journal_init=1,root_owner=${this.rootId}:${this.rootId}`,
        '-d', skel, tmp,
      ]);
      await rename(tmp, target);
    } finally {
      await rm(tmp, { force: true });
      await rm(skel, { recursive: true, force: true });
    }
    return target;
  }

  /** Creates the machine's image if missing (sparse copy of the template). */
  async ensureImage(paths: MachinePaths, gib: number): Promise<void> {
    if (await pathExists(paths.image)) return;
    const template = await this.template(gib);
    const tmp = `${paths.image}.tmp`;
    await runOk(this.tools.cp, ['--sparse=always', template, tmp]);
    await rename(tmp, paths.image);
  }

  /** Mounts the image and the overlay root when not mounted already (one helper process for both). */
  async ensureMounted(paths: MachinePaths, imageDir: string): Promise<void> {
    const mounts = await readMounts();
    const storageMounted = mounts.some((m) => m.mountPoint === paths.storage);
    const rootMounted = mounts.some((m) => m.mountPoint === paths.rootfs);
    if (storageMounted && rootMounted) return;
    const cmds: string[] = ['set -e', `mkdir -p "$2" "$3"`];
    if (!storageMounted) cmds.push(`"$4" -o loop,noatime "$1" "$2"`);
    if (!rootMounted) cmds.push(`"$4" -t overlay overlay -o "lowerdir=$5,upperdir=$2/upper,workdir=$2/work" "$3"`);
    const r = await run(this.tools.sh, ['-c', cmds.join('\n'), 'hangar-mount', paths.image, paths.storage, paths.rootfs, this.tools.mount, imageDir]);
    if (r.code !== 0) throw new Error(`mounting storage failed: ${r.stderr.trim()}`);
  }

  /**
   * Grows the mounted image and its filesystem online to `gib` (never shrinks).
   * Online ext4 resize needs CAP_SYS_RESOURCE; on hosts that withhold it from
   * root the file is grown and 'deferred' returned: the filesystem follows at
   * the next cold boot (growOffline).
   */
  async grow(paths: MachinePaths, gib: number): Promise<'done' | 'deferred'> {
    const loop = (await this.storageMount(paths))?.source;
    if (loop === undefined || !loop.startsWith('/dev/loop')) throw new Error('storage is not mounted: cannot grow it');
    if ((await stat(paths.image)).size < gib * GIB) {
      await truncate(paths.image, gib * GIB);
      await runOk(this.tools.losetup, ['-c', loop]);
    }
    const r = await run(this.tools.resize2fs, [loop]);
    if (r.code === 0) return 'done';
    if (/permission denied|operation not permitted/i.test(r.stderr)) return 'deferred';
    throw new Error(`resize2fs ${loop} failed: ${r.stderr.trim()}`);
  }

  /** Grows an unmounted image and its filesystem to `gib` (the machine's sandbox must be gone). */
  async growOffline(paths: MachinePaths, gib: number): Promise<void> {
    await this.unmountAll(paths);
    if ((await stat(paths.image)).size < gib * GIB) await truncate(paths.image, gib * GIB);
    await runOk(this.tools.resize2fs, ['-f', paths.image]);
  }

  async storageMount(paths: MachinePaths): Promise<MountEntry | undefined> {
    return (await readMounts()).find((m) => m.mountPoint === paths.storage);
  }

  /** Mounts that belong to the machine (under its directory). */
  async mountsOf(paths: MachinePaths): Promise<MountEntry[]> {
    const prefix = `${paths.dir}/`;
    return (await readMounts()).filter((m) => m.mountPoint.startsWith(prefix));
  }

  /** Unmounts everything under the machine's directory and detaches its loop device. */
  async unmountAll(paths: MachinePaths): Promise<void> {
    // The overlay root first (it holds the storage mount busy), then deepest first.
    const order = (m: MountEntry) => (m.mountPoint === paths.rootfs ? Number.MAX_SAFE_INTEGER : m.mountPoint.length);
    const mounts = (await this.mountsOf(paths)).sort((a, b) => order(b) - order(a));
    for (const m of mounts) {
      if ((await run(this.tools.umount, [m.mountPoint])).code === 0) continue;
      // Busy: detach lazily. Either may also fail because the mount is already gone (a
      // concurrent teardown, a propagated unmount): that is the state we want.
      const lazy = await run(this.tools.umount, ['-l', m.mountPoint]);
      if (lazy.code !== 0 && (await readMounts()).some((x) => x.mountPoint === m.mountPoint)) {
        throw new Error(`umount -l ${m.mountPoint} failed: ${lazy.stderr.trim()}`);
      }
    }
    // mount -o loop sets autoclear, but a crash between losetup and mount can leave one attached.
    for (const dev of await loopsBackedBy(paths.image)) await run(this.tools.losetup, ['-d', dev]);
    // Detaching completes only once nothing holds the filesystem: a sandbox that has just died
    // may still be releasing its mount namespace. Wait for it, so a teardown really leaves no
    // loop device; past the deadline the kernel still detaches it once the holder is gone.
    await waitFor(async () => (await loopsBackedBy(paths.image)).length === 0, LOOP_DETACH_DEADLINE_MS, LOOP_DETACH_POLL_MS);
  }
}


/** Loop devices whose backing file is `image` (from sysfs: no helper process). */
async function loopsBackedBy(image: string): Promise<string[]> {
  const devices = await readdir('/sys/block').catch(() => [] as string[]);
  const found: string[] = [];
  for (const dev of devices) {
    if (!dev.startsWith('loop')) continue;
    const backing = await readFile(`/sys/block/${dev}/loop/backing_file`, 'utf8').catch(() => null);
    if (backing?.trim() === image) found.push(`/dev/${dev}`);
  }
  return found;
}

async function touch(p: string): Promise<string> {
  await (await open(p, 'w')).close();
  return p;
}
