/**
 * Removing one sandbox and everything it holds on the host: processes,
 * cgroups, mounts, loop device and directory. Shared by destroy (a machine)
 * and the warm pool (an entry nobody claimed), so both leave the same nothing
 * behind.
 */
import { rm } from 'node:fs/promises';
import { RuntimeError } from '../runtime.js';
import type { Cgroups } from './cgroups.js';
import { isAlive, killQuietly, waitFor } from './proc.js';
import type { BootRecord } from './sandbox.js';
import type { MachinePaths, Storage } from './storage.js';

/** How long a killed sandbox may take to be gone entirely. */
const TEARDOWN_DEADLINE_MS = 10_000;
const TEARDOWN_POLL_MS = 5;

export interface TeardownDeps {
  readonly cgroups: Cgroups;
  readonly storage: Storage;
}

/**
 * Kills the sandbox whose cgroups are named `cgroupName`, then removes its
 * cgroups, unmounts its storage and deletes `paths.dir`. `boot` (when known)
 * lets the init die first and is waited for. Repeatable after a crash at any
 * point.
 */
export async function teardownSandbox(deps: TeardownDeps, cgroupName: string, paths: MachinePaths, boot: BootRecord | null): Promise<void> {
  const { cgroups, storage } = deps;
  if (boot !== null && (await isAlive(boot.init))) {
    // Init first: the kernel then kills everything in the pid namespace while the exec
    // helpers outside it are still alive to reap their children. Killing all at once
    // orphans those children to the host's init, which may take its time reaping them.
    killQuietly(boot.init.pid, 'SIGKILL');
    if ((await cgroups.freezeState(cgroupName)) !== 'thawed') await cgroups.thaw(cgroupName);
    await waitFor(async () => !(await isAlive(boot.init)), TEARDOWN_DEADLINE_MS, TEARDOWN_POLL_MS);
  }
  const gone = await cgroups.killAll(cgroupName);
  // An exiting task leaves its cgroup before it is gone (pid 1 of a namespace waits for its
  // children first): wait for the recorded processes themselves too.
  const exited =
    boot === null ||
    (await waitFor(async () => !(await isAlive(boot.init)) && !(await isAlive(boot.monitor)), TEARDOWN_DEADLINE_MS, TEARDOWN_POLL_MS));
  if (!gone || !exited) {
    throw new RuntimeError(`processes of ${cgroupName} would not die`, { retryable: true, reason: 'TeardownStuck' });
  }
  await cgroups.remove(cgroupName);
  await storage.unmountAll(paths);
  await rm(paths.dir, { recursive: true, force: true });
}
