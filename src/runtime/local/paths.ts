/** File-system helpers of the local runtime. */
import { lstat } from 'node:fs/promises';

/** Whether something is at `p` (a symlink counts itself, not its target). */
export async function pathExists(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch {
    return false;
  }
}

/** rwx--x--x: root owns it, the sandboxes' setup may only pass through. */
export const TRAVERSE_ONLY = 0o711;
