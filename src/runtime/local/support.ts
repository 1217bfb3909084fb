/**
 * Whether this host can run real sandboxes, and the tools to do it with. The
 * server calls detectLocalSupport() and falls back to the simulated runtime
 * with one log line when it cannot.
 */
import { access, readFile } from 'node:fs/promises';
import { detectCgroups, type CgroupLayout } from './cgroups.js';
import { findTool, run } from './proc.js';
import { DEFAULT_BUSYBOX, isStaticElf } from './rootfs.js';
import type { IdRange } from './sandbox.js';

/** Ids mapped into every sandbox: a full 16-bit range, as a normal distribution expects. */
export const SANDBOX_ID_COUNT = 65_536;

export interface LocalTools {
  readonly sh: string;
  readonly unshare: string;
  readonly nsenter: string;
  readonly bwrap: string;
  readonly mount: string;
  readonly umount: string;
  readonly losetup: string;
  readonly mkfs: string;
  readonly resize2fs: string;
  readonly cp: string;
  readonly busybox: string;
}

/** Tool name -> Debian package, for the error message. */
const TOOLS: Readonly<Record<Exclude<keyof LocalTools, 'busybox'> | 'newuidmap' | 'newgidmap', [string, string]>> = {
  sh: ['sh', 'dash'],
  unshare: ['unshare', 'util-linux'],
  nsenter: ['nsenter', 'util-linux'],
  bwrap: ['bwrap', 'bubblewrap'],
  mount: ['mount', 'mount'],
  umount: ['umount', 'mount'],
  losetup: ['losetup', 'mount'],
  mkfs: ['mkfs.ext4', 'e2fsprogs'],
  resize2fs: ['resize2fs', 'e2fsprogs'],
  cp: ['cp', 'coreutils'],
  newuidmap: ['newuidmap', 'uidmap'],
  newgidmap: ['newgidmap', 'uidmap'],
};

export interface LocalEnvironment {
  readonly tools: LocalTools;
  readonly cgroups: CgroupLayout;
  readonly ids: IdRange;
}

async function subordinateRange(file: string): Promise<IdRange | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return null;
  }
  for (const line of text.split('\n')) {
    const [name, start, count] = line.trim().split(':');
    if ((name === 'root' || name === '0') && Number(count) >= SANDBOX_ID_COUNT && Number(start) > 0) {
      return { start: Number(start), count: SANDBOX_ID_COUNT };
    }
  }
  return null;
}

/** Everything the local runtime needs, or the first reason it cannot run here. */
export async function probeLocalEnvironment(busyboxPath = DEFAULT_BUSYBOX): Promise<LocalEnvironment | { reason: string }> {
  if (process.platform !== 'linux') return { reason: `the local runtime needs Linux (this is ${process.platform})` };
  if (process.getuid?.() !== 0) return { reason: 'the local runtime needs to run as root' };
  const cg = await detectCgroups();
  if ('error' in cg) return { reason: cg.error };
  const found: Partial<Record<string, string>> = {};
  const missing: string[] = [];
  for (const [key, [name, pkg]] of Object.entries(TOOLS)) {
    const p = await findTool(name);
    if (p === null) missing.push(`${name} (${pkg})`);
    else found[key] = p;
  }
  if (missing.length > 0) return { reason: `missing tools: ${missing.join(', ')}; run scripts/setup-host.sh` };
  try {
    if (!(await isStaticElf(busyboxPath))) return { reason: `${busyboxPath} is not statically linked: install busybox-static` };
  } catch {
    return { reason: `${busyboxPath} not found: install busybox-static` };
  }
  const help = await run(found.unshare as string, ['--help']);
  if (!help.stdout.includes('--map-users')) return { reason: 'unshare lacks --map-users: util-linux 2.38 or later is needed' };
  const uids = await subordinateRange('/etc/subuid');
  const gids = await subordinateRange('/etc/subgid');
  if (uids === null || gids === null) {
    return { reason: `no subordinate id range of ${SANDBOX_ID_COUNT} for root in /etc/subuid and /etc/subgid; run scripts/setup-host.sh` };
  }
  if (uids.start !== gids.start) return { reason: 'root\'s /etc/subuid and /etc/subgid ranges must start at the same id' };
  try {
    await access('/dev/loop-control');
  } catch {
    return { reason: 'no loop devices (/dev/loop-control): load the loop module' };
  }
  for (const fs of ['overlay', 'ext4']) {
    if (await hasFilesystem(fs)) continue;
    // Not loaded yet is not missing: mount would load it, and so does modprobe.
    const modprobe = await findTool('modprobe');
    if (modprobe !== null) await run(modprobe, [fs]).catch(() => undefined);
    if (!(await hasFilesystem(fs))) return { reason: `the kernel lacks ${fs} support (modprobe ${fs})` };
  }
  const tools = { ...found, busybox: busyboxPath } as unknown as LocalTools; // every key was found above
  return { tools, cgroups: cg, ids: uids };
}

async function hasFilesystem(fs: string): Promise<boolean> {
  const text = await readFile('/proc/filesystems', 'utf8');
  return new RegExp(`\\s${fs}$`, 'm').test(text);
}

export async function detectLocalSupport(): Promise<{ ok: true } | { ok: false; reason: string }> {
  try {
    const env = await probeLocalEnvironment();
    return 'reason' in env ? { ok: false, reason: env.reason } : { ok: true };
  } catch (e) {
    return { ok: false, reason: `probing the host failed: ${(e as Error).message}` };
  }
}
