import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { harness, run, sh, START_MODES, waitUntil, type Harness } from './helpers.js';

const MIB = 1024 * 1024;
/** Long enough for CFS quota accounting (100 ms periods) to average out. */
const CPU_WINDOW_MS = 2_000;

describe.each(START_MODES)('local runtime resource limits (%s start)', { timeout: 60_000 }, (mode) => {
  let h: Harness;
  beforeAll(async () => {
    h = await harness(mode);
  });
  afterAll(async () => {
    await h.cleanup();
  });

  test('memory limit is visible inside and enforced; the machine stays usable', async () => {
    await h.boot('lim-mem', { memoryMib: 128 });
    const limit = Number((await sh(h.rt, 'lim-mem', 'cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max')).trim());
    expect(limit).toBe(128 * MIB);

    // dd allocates (and fills) one block of bs bytes: 300 MiB cannot fit in 128.
    const hog = await run(h.rt, 'lim-mem', ['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=300M', 'count=1']);
    expect(hog.result.signal).toBe(9);
    expect(hog.result.startError).toBeUndefined();
    // A smaller allocation fits, and the machine itself survived.
    const fits = await run(h.rt, 'lim-mem', ['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=32M', 'count=1']);
    expect(fits.result.exitCode).toBe(0);
    expect((await h.rt.inspect('lim-mem', h.rt.hostId)).state).toBe('running');
    expect(await sh(h.rt, 'lim-mem', 'echo still here')).toBe('still here\n');
  });

  test('CPU quota: a busy loop in a 0.25 vCPU machine gets about a quarter of a core', async () => {
    await h.boot('lim-cpu', { vcpu: 0.25 });
    const quota = await sh(h.rt, 'lim-cpu', 'cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cat /sys/fs/cgroup/cpu.max');
    expect(quota.trim().split(' ')[0]).toBe('25000');

    const busy = await h.rt.exec('lim-cpu', { argv: ['sh', '-c', 'while :; do :; done'] }, () => undefined);
    const start = await h.rt.cpuUsageUsec('lim-cpu');
    await waitUntil('busy loop running', async () => (await h.rt.cpuUsageUsec('lim-cpu')) > start + 10_000);
    const u0 = await h.rt.cpuUsageUsec('lim-cpu');
    const t0 = performance.now();
    // A measurement window, not a wait for a condition: usage over wall time is the quantity.
    await new Promise((r) => setTimeout(r, CPU_WINDOW_MS));
    const u1 = await h.rt.cpuUsageUsec('lim-cpu');
    const t1 = performance.now();
    busy.kill();
    expect((await busy.done).signal).toBe(9);
    const cores = (u1 - u0) / 1000 / (t1 - t0);
    console.log(`0.25 vCPU machine used ${cores.toFixed(3)} of a core`);
    expect(cores).toBeGreaterThan(0.15);
    expect(cores).toBeLessThan(0.4);
  });

  test('storage_gib is enforced: writing past 1 GiB fails, and the space is usable again after', async () => {
    await h.boot('lim-disk', { storageGib: 1, memoryMib: 512 });
    const big = await run(h.rt, 'lim-disk', ['dd', 'if=/dev/zero', 'of=/root/big', 'bs=1M', 'count=1200']);
    expect(big.result.exitCode).not.toBe(0);
    expect(big.stderr).toMatch(/No space left/i);
    const size = Number((await sh(h.rt, 'lim-disk', 'stat -c %s /root/big')).trim());
    expect(size).toBeLessThan(1024 * MIB);
    // The whole root filesystem shares the cap, not only /root.
    const etc = await run(h.rt, 'lim-disk', ['dd', 'if=/dev/zero', 'of=/etc/big', 'bs=1M', 'count=10']);
    expect(etc.result.exitCode).not.toBe(0);
    await sh(h.rt, 'lim-disk', 'rm /root/big /etc/big; echo ok > /root/ok');
    expect(await sh(h.rt, 'lim-disk', 'cat /root/ok')).toBe('ok\n');
  });

  test('resize rewrites limits and grows storage (online, or at the next cold boot where the host forbids online resize)', async () => {
    await h.boot('lim-resize', { vcpu: 1, memoryMib: 128, storageGib: 1 });
    const dfKib = async () => Number((await sh(h.rt, 'lim-resize', "df -k / | tail -1 | awk '{print $2}'")).trim());
    const before = await dfKib();
    expect(before).toBeLessThan(1024 * 1024);
    await sh(h.rt, 'lim-resize', 'echo data > /root/keep');

    await h.rt.resize(h.spec('lim-resize', { vcpu: 0.5, memoryMib: 192, storageGib: 2 }));
    expect((await sh(h.rt, 'lim-resize', 'cat /sys/fs/cgroup/memory/memory.limit_in_bytes')).trim()).toBe(String(192 * MIB));
    expect((await sh(h.rt, 'lim-resize', 'cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us')).trim()).toBe('50000');
    if ((await dfKib()) < 1.5 * 1024 * 1024) {
      // Hosts whose root lacks CAP_SYS_RESOURCE cannot resize ext4 online: the filesystem
      // follows at the next cold boot. Force one (init killed) to check it does.
      const info = await h.rt.sandboxInfo('lim-resize');
      if (info === null) throw new Error('no sandbox');
      process.kill(info.initPid, 'SIGKILL');
      await waitUntil('sandbox gone', async () => (await h.rt.inspect('lim-resize', h.rt.hostId)).state === 'absent');
      await h.rt.start(h.spec('lim-resize', { vcpu: 0.5, memoryMib: 192, storageGib: 2 }));
    }
    expect(await dfKib()).toBeGreaterThan(1.9 * 1024 * 1024);
    expect(await sh(h.rt, 'lim-resize', 'cat /root/keep')).toBe('data\n');
    // Shrinking the memory back works too (limits can go down).
    await h.rt.resize(h.spec('lim-resize', { vcpu: 0.5, memoryMib: 128, storageGib: 2 }));
    expect((await sh(h.rt, 'lim-resize', 'cat /sys/fs/cgroup/memory/memory.limit_in_bytes')).trim()).toBe(String(128 * MIB));
  });

  test('a pids limit stops fork bombs', async () => {
    await h.boot('lim-pids');
    const max = (await sh(h.rt, 'lim-pids', 'cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max')).trim();
    expect(Number(max)).toBeGreaterThan(0);
  });
});
