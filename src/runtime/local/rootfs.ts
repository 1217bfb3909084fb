/**
 * The base image every machine's root filesystem is layered on (read-only
 * lower layer of an overlay), and the static busybox the runtime itself needs
 * inside every sandbox (init and the exec launcher), whatever the image.
 *
 * Image files are owned by the subordinate id that is root inside the
 * sandboxes, so root in a machine owns its /etc, /usr... (writes go to the
 * machine's own overlay upper layer, never to the shared image).
 */
import { randomBytes } from 'node:crypto';
import { chmod, chown, copyFile, lchown, mkdir, open, readdir, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { runOk } from './proc.js';
import { pathExists } from './paths.js';

export const DEFAULT_BUSYBOX = '/bin/busybox';

/** Directories every image gets, with their modes. */
const IMAGE_DIRS: readonly [string, number][] = [
  ['bin', 0o755],
  ['sbin', 0o755],
  ['usr/bin', 0o755],
  ['usr/sbin', 0o755],
  ['etc', 0o755],
  ['root', 0o700],
  ['home', 0o755],
  ['tmp', 0o1777],
  ['var/tmp', 0o1777],
  ['run', 0o755],
  ['proc', 0o555],
  ['sys', 0o555],
  ['dev', 0o755],
  ['.hangar', 0o755],
];

const IMAGE_FILES: readonly [string, string][] = [
  ['etc/passwd', 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n'],
  ['etc/group', 'root:x:0:\nnogroup:x:65534:\n'],
  ['etc/shadow', 'root:*:19000:0:99999:7:::\n'],
  ['etc/hosts', '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'],
  ['etc/nsswitch.conf', 'passwd: files\ngroup: files\nhosts: files\n'],
  ['etc/profile', 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nexport HOME=/root\n'],
  ['etc/os-release', 'NAME="Hangar busybox"\nID=hangar-busybox\n'],
];

/** True when the ELF file has no program interpreter, i.e. it runs without the host's libc. */
export async function isStaticElf(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(64);
    await fh.read(head, 0, 64, 0);
    if (head.readUInt32BE(0) !== 0x7f454c46 || head[4] !== 2 || head[5] !== 1) return false; // 64-bit little-endian ELF only
    const phoff = Number(head.readBigUInt64LE(32));
    const phentsize = head.readUInt16LE(54);
    const phnum = head.readUInt16LE(56);
    const table = Buffer.alloc(phentsize * phnum);
    await fh.read(table, 0, table.length, phoff);
    const PT_INTERP = 3;
    for (let i = 0; i < phnum; i++) if (table.readUInt32LE(i * phentsize) === PT_INTERP) return false;
    return true;
  } finally {
    await fh.close();
  }
}


/** Copies the static busybox to <imagesDir>/tools/busybox once (bind-mounted into every sandbox). */
export async function ensureTools(imagesDir: string, busybox: string): Promise<string> {
  const target = join(imagesDir, 'tools', 'busybox');
  if (await pathExists(target)) return target;
  await mkdir(dirname(target), { recursive: true });
  const tmp = `${target}.${randomBytes(4).toString('hex')}`;
  await copyFile(busybox, tmp);
  await chmod(tmp, 0o755);
  await rename(tmp, target);
  return target;
}

/**
 * Builds the default image (busybox applets, minimal /etc) at
 * <imagesDir>/busybox once; built in a temporary directory and renamed, so a
 * crash never leaves a half image in place.
 */
export async function ensureBusyboxImage(imagesDir: string, busybox: string, rootId: number): Promise<string> {
  const target = join(imagesDir, 'busybox');
  if (await pathExists(target)) return target;
  const tmp = `${target}.tmp-${randomBytes(4).toString('hex')}`;
  try {
    for (const [d, mode] of IMAGE_DIRS) {
      await mkdir(join(tmp, d), { recursive: true });
      await chmod(join(tmp, d), mode);
    }
    await copyFile(busybox, join(tmp, 'bin/busybox'));
    await chmod(join(tmp, 'bin/busybox'), 0o755);
    await writeFile(join(tmp, '.hangar/busybox'), '');
    const applets = (await runOk(busybox, ['--list-full'])).split('\n').filter(Boolean);
    for (const applet of applets) {
      const p = join(tmp, applet);
      if (await pathExists(p)) continue;
      await mkdir(dirname(p), { recursive: true });
      await symlink('/bin/busybox', p);
    }
    for (const [f, content] of IMAGE_FILES) await writeFile(join(tmp, f), content);
    await chmod(join(tmp, 'etc/shadow'), 0o640);
    await chownTree(tmp, rootId);
    await rename(tmp, target);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
  return target;
}

/** Owner of an image's root directory, to warn about images that root in a sandbox cannot modify. */
export async function imageOwner(imageDir: string): Promise<number> {
  return (await stat(imageDir)).uid;
}

async function chownTree(dir: string, id: number): Promise<void> {
  await chown(dir, id, id);
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) await chownTree(p, id);
    else await lchown(p, id, id);
  }
}
