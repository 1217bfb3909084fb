/** Parsing /proc/self/mountinfo: what is mounted where, from what. */
import { readFile } from 'node:fs/promises';

export interface MountEntry {
  readonly mountPoint: string;
  readonly fsType: string;
  readonly source: string;
  readonly superOptions: readonly string[];
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function parseMountinfo(text: string): MountEntry[] {
  const mounts: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const mountPoint = line.slice(0, sep).split(' ')[4];
    const [fsType, source, superOpts] = line.slice(sep + 3).split(' ');
    if (mountPoint === undefined || fsType === undefined) continue;
    mounts.push({
      mountPoint: unescape(mountPoint),
      fsType,
      source: unescape(source ?? ''),
      superOptions: (superOpts ?? '').split(','),
    });
  }
  return mounts;
}

export async function readMounts(): Promise<MountEntry[]> {
  return parseMountinfo(await readFile('/proc/self/mountinfo', 'utf8'));
}
