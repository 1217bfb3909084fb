/**
 * The warm pool, as a user of the runtime sees it: a machine started while
 * the pool is warm is bound to a pre-booted sandbox, and is then exactly a
 * machine (its name, its limits, its own empty storage, nobody else's files);
 * a miss or a broken entry still gives a working machine; and the pool leaves
 * nothing on the host after shutdown or after its controlplane is SIGKILLed.
 * The other local suites also run every check on pooled machines
 * (helpers.ts, START_MODES).
 */
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import { createLocalRuntime, type LocalRuntime, type SandboxInfo } from '../../../src/runtime/local/index.js';
import { killQuietly } from '../../../src/runtime/local/proc.js';
import { harness, poolFootprint, processExists, run, sh, startCrashableControlplane, transpileSources, waitForPool, waitUntil, type Harness } from './helpers.js';

const MIB = 1024 * 1024;

/** Fails the test unless the machine's current boot came from the pool (or did not, with `pooled` false). */
async function infoOf(rt: LocalRuntime, machineId: string, pooled: boolean): Promise<SandboxInfo> {
  const info = await rt.sandboxInfo(machineId);
  if (info === null) throw new Error(`${machineId} has no sandbox`);
  expect(info.pooled, `${machineId} pooled`).toBe(pooled);
  return info;
}

async function dfKib(rt: LocalRuntime, machineId: string): Promise<number> {
  return Number((await sh(rt, machineId, "df -k / | tail -1 | awk '{print $2}'")).trim());
}

describe('local runtime warm pool', { timeout: 90_000 }, () => {
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.cleanup();
    h = undefined;
  });

  test('a machine started from a warm pool is that machine: its name, limits and its own empty storage', async () => {
    h = await harness('pooled');
    await waitForPool(h.rt, 1, 2);
    await h.rt.start(h.spec('pool-a', { vcpu: 0.25, memoryMib: 96, storageGib: 1 }));
    const info = await infoOf(h.rt, 'pool-a', true);
    expect(await h.rt.inspect('pool-a', h.rt.hostId)).toEqual({ state: 'running', hostGone: false });
    expect(h.rt.poolStats()).toMatchObject({ hits: 1, misses: 0 });

    // Named after the machine, inside and on the host.
    expect(await sh(h.rt, 'pool-a', 'hostname')).toBe('pool-a\n');
    expect(info.machineDir.endsWith('/machines/pool-a')).toBe(true);
    for (const d of info.cgroupDirs) expect(d.endsWith('/pool-a')).toBe(true);
    expect(await readFile(`/proc/${info.initPid}/cgroup`, 'utf8')).toMatch(/memory:\/hangar\/[0-9a-f]+\/pool-a$/m);

    // The machine's limits, not the pool's idle ones, visible inside and enforced.
    expect((await sh(h.rt, 'pool-a', 'cat /sys/fs/cgroup/memory/memory.limit_in_bytes')).trim()).toBe(String(96 * MIB));
    expect((await sh(h.rt, 'pool-a', 'cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us')).trim()).toBe('25000');
    const hog = await run(h.rt, 'pool-a', ['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=200M', 'count=1']);
    expect(hog.result.signal).toBe(9);
    expect(await sh(h.rt, 'pool-a', 'echo alive')).toBe('alive\n');

    // Its own storage of its size, empty but for what the image brings.
    expect(await sh(h.rt, 'pool-a', 'ls -A /root')).toBe('');
    const kib = await dfKib(h.rt, 'pool-a');
    expect(kib).toBeGreaterThan(0.9 * 1024 * 1024);
    expect(kib).toBeLessThan(1024 * 1024);
    expect(await sh(h.rt, 'pool-a', 'echo mine > /root/f; cat /root/f')).toBe('mine\n');

    // Root inside is still an unprivileged id outside.
    const status = await readFile(`/proc/${info.initPid}/status`, 'utf8');
    expect(/^Uid:\s+(\d+)/m.exec(status)?.[1]).not.toBe('0');
  });

  test('two pooled machines share nothing, and the pool refills behind them', async () => {
    h = await harness('pooled');
    await waitForPool(h.rt, 1, 2);
    await h.rt.start(h.spec('pool-b1'));
    await h.rt.start(h.spec('pool-b2'));
    const b1 = await infoOf(h.rt, 'pool-b1', true);
    const b2 = await infoOf(h.rt, 'pool-b2', true);
    expect(b1.initPid).not.toBe(b2.initPid);

    await sh(h.rt, 'pool-b1', 'echo secret > /root/only-b1; echo tampered >> /etc/passwd');
    expect(await sh(h.rt, 'pool-b2', 'find / -name only-b1 2>/dev/null; true')).toBe('');
    expect(await sh(h.rt, 'pool-b2', 'cat /etc/passwd')).not.toContain('tampered');
    expect(await sh(h.rt, 'pool-b2', 'hostname')).toBe('pool-b2\n');
    const pids = (await sh(h.rt, 'pool-b2', 'ls /proc | grep -E "^[0-9]+$"')).trim().split('\n');
    expect(pids.length).toBeLessThan(10);

    // Both entries were taken; the pool prepares new ones, never handing an entry out twice.
    await waitForPool(h.rt, 1, 2);
    const footprint = await poolFootprint(h.stateDir);
    expect(footprint.dirs).toHaveLength(2);
    await h.rt.start(h.spec('pool-b3'));
    const b3 = await infoOf(h.rt, 'pool-b3', true);
    expect([b1.initPid, b2.initPid]).not.toContain(b3.initPid);
    expect(await sh(h.rt, 'pool-b3', 'ls -A /root')).toBe('');
  });

  test('a storage size the pool does not hold boots cold at that size; the pool then prepares it', async () => {
    h = await harness('pooled');
    await waitForPool(h.rt, 1, 2);
    await h.rt.start(h.spec('pool-c1', { storageGib: 2 }));
    await infoOf(h.rt, 'pool-c1', false);
    expect(await dfKib(h.rt, 'pool-c1')).toBeGreaterThan(1.9 * 1024 * 1024);
    expect(h.rt.poolStats()).toMatchObject({ misses: 1, storageGib: 2 });

    await waitForPool(h.rt, 2, 2, 60_000);
    // The 1 GiB entries were replaced, not kept beside the new ones.
    expect((await poolFootprint(h.stateDir)).dirs).toHaveLength(2);
    await h.rt.start(h.spec('pool-c2', { storageGib: 2 }));
    await infoOf(h.rt, 'pool-c2', true);
    expect(await dfKib(h.rt, 'pool-c2')).toBeGreaterThan(1.9 * 1024 * 1024);
  });

  test('pool sandboxes killed from outside: a start still gives a working machine, and the pool heals', async () => {
    h = await harness('pooled');
    await waitForPool(h.rt, 1, 2);
    const before = await poolFootprint(h.stateDir);
    expect(before.pids.length).toBeGreaterThan(0);
    // Some of them (boot helpers) may be gone by now on their own.
    for (const pid of before.pids) killQuietly(pid);
    // Whether the pool has noticed yet or not (then binding fails and it boots cold), the machine runs.
    await h.rt.start(h.spec('pool-d'));
    expect((await h.rt.inspect('pool-d', h.rt.hostId)).state).toBe('running');
    expect(await sh(h.rt, 'pool-d', 'hostname; ls -A /root')).toBe('pool-d\n');
    for (const pid of before.pids) expect(await processExists(pid)).toBe(false);

    // The dead entries are torn down (in the background) and replaced: two fresh entries, nothing of the old.
    await waitForPool(h.rt, 1, 2);
    const rt = h.rt;
    await waitUntil('dead pool entries removed', async () => {
      const now = await poolFootprint(h?.stateDir ?? '');
      return now.dirs.length === 2 && before.dirs.every((d) => !now.dirs.includes(d));
    });
    expect(rt.poolStats()).toMatchObject({ ready: 2 });
    const after = await poolFootprint(h.stateDir);
    expect(after.mounts).toHaveLength(4);
    expect(after.loops).toHaveLength(2);
  });

  test('shutdown drains the pool: no process, cgroup, mount, loop device or file is left', async () => {
    h = await harness('pooled');
    await waitForPool(h.rt, 1, 2);
    const warm = await poolFootprint(h.stateDir);
    expect(warm.dirs).toHaveLength(2);
    expect(warm.cgroups.length).toBeGreaterThan(0);
    expect(warm.mounts.length).toBe(4); // storage + overlay root per entry
    expect(warm.loops).toHaveLength(2);

    await h.rt.close();
    const left = await poolFootprint(h.stateDir);
    for (const pid of warm.pids) expect(await processExists(pid)).toBe(false);
    expect(left).toEqual({ dirs: [], cgroups: [], pids: [], mounts: [], loops: [], files: [] });
    h.rt = await h.reopen(); // for cleanup()
  });
});

describe('local runtime warm pool after the controlplane is SIGKILLed', { timeout: 90_000 }, () => {
  let work: string;
  let stateDir: string;
  let rt: LocalRuntime | undefined;
  afterAll(async () => {
    rt ??= await createLocalRuntime({ stateDir, poolSize: 0 });
    await rt.recover([]);
    await rt.close();
    await rm(work, { recursive: true, force: true });
  });

  test('its pooled machine lives on; its unclaimed entries go, and the next controlplane never reuses them', async () => {
    work = await mkdtemp(join(tmpdir(), 'hangar-local-pool-crash-'));
    await chmod(work, 0o711); // the sandboxes' unprivileged setup walks through it to the state dir
    stateDir = join(work, 'state');
    await transpileSources(join(work, 'build'));
    const script = `
      import { createLocalRuntime } from ${JSON.stringify(join(work, 'build/src/runtime/local/index.js'))};
      const rt = await createLocalRuntime({ stateDir: ${JSON.stringify(stateDir)}, poolSize: 2 });
      while (rt.poolStats().ready < 2) await new Promise((r) => setTimeout(r, 20));
      await rt.start({ machineId: 'crash-p', hostId: rt.hostId, sizes: { vcpu: 1, memoryMib: 128, storageGib: 1 } });
      const h = await rt.exec('crash-p', { argv: ['sh', '-c', 'echo before-crash > /root/f'] }, () => {});
      await h.done;
      // Wait for the refill, so unclaimed entries exist when the controlplane dies.
      while (rt.poolStats().ready < 2) await new Promise((r) => setTimeout(r, 20));
      console.log(JSON.stringify(await rt.sandboxInfo('crash-p')));
      setInterval(() => {}, 1000);
    `;
    const controlplane = await startCrashableControlplane(script, 60_000);
    const info = controlplane.info;
    expect(info.pooled).toBe(true);
    const stale = await poolFootprint(stateDir);
    expect(stale.dirs).toHaveLength(2);
    expect(stale.pids.length).toBeGreaterThan(0);

    await controlplane.kill();

    // Unclaimed sandboxes end themselves once nobody can claim them; the machine does not.
    await waitUntil('unclaimed pool sandboxes gone', async () => {
      for (const pid of stale.pids) if (await processExists(pid)) return false;
      return true;
    });
    expect(await processExists(info.initPid)).toBe(true);

    rt = await createLocalRuntime({ stateDir, poolSize: 2 });
    // The dead controlplane's entries are gone before the new runtime is even used.
    const swept = await poolFootprint(stateDir);
    for (const d of stale.dirs) expect(swept.dirs).not.toContain(d);
    for (const c of stale.cgroups) expect(swept.cgroups).not.toContain(c);
    for (const m of stale.mounts) expect(swept.mounts).not.toContain(m);
    expect(swept.loops.filter((l) => stale.loops.includes(l))).toEqual([]);

    await rt.recover([{ machineId: 'crash-p', hostId: rt.hostId, state: 'running', sizes: { vcpu: 1, memoryMib: 128, storageGib: 1 } }]);
    expect((await rt.inspect('crash-p', rt.hostId)).state).toBe('running');
    expect((await rt.sandboxInfo('crash-p'))?.initPid).toBe(info.initPid);
    expect(await sh(rt, 'crash-p', 'cat /root/f; hostname')).toBe('before-crash\ncrash-p\n');

    // The new pool is its own: new machines get fresh, empty sandboxes.
    await waitForPool(rt, 1, 2);
    await rt.start({ machineId: 'crash-q', hostId: rt.hostId, sizes: { vcpu: 1, memoryMib: 128, storageGib: 1 } });
    expect((await rt.sandboxInfo('crash-q'))?.pooled).toBe(true);
    expect(await sh(rt, 'crash-q', 'ls -A /root; hostname')).toBe('crash-q\n');
    await rt.destroy('crash-q');
    await rt.destroy('crash-p');
    expect(await processExists(info.initPid)).toBe(false);
    await rt.close();
    expect(await poolFootprint(stateDir)).toEqual({ dirs: [], cgroups: [], pids: [], mounts: [], loops: [], files: [] });
    rt = await createLocalRuntime({ stateDir, poolSize: 0 }); // for afterAll
  });
});
