import { readFile, stat } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { RuntimeError } from '../../../src/runtime/runtime.js';
import { detectLocalSupport } from '../../../src/runtime/local/index.js';
import { findCgroupDirs, harness, loopsUnder, mountsUnder, processExists, run, sh, START_MODES, waitUntil, type Harness } from './helpers.js';

describe.each(START_MODES)('local runtime lifecycle (%s start)', { timeout: 60_000 }, (mode) => {
  let h: Harness;
  beforeAll(async () => {
    h = await harness(mode);
  });
  afterAll(async () => {
    await h.cleanup();
  });

  test('the host supports it', async () => {
    expect(await detectLocalSupport()).toEqual({ ok: true });
    const [host] = await h.rt.hosts();
    expect(host?.hostId).toBe(h.rt.hostId);
    expect(host?.ready).toBe(true);
    expect(host?.capacity.vcpu).toBeGreaterThan(0);
    expect(host?.capacity.memoryMib).toBeGreaterThan(0);
    expect(host?.capacity.storageGib).toBeGreaterThan(0);
  });

  test('start -> running; a file written by one exec is read by the next', async () => {
    await h.boot('life-a');
    expect(await h.rt.inspect('life-a', h.rt.hostId)).toEqual({ state: 'running', hostGone: false });
    await sh(h.rt, 'life-a', 'echo "hello from a" > /root/note.txt');
    const r = await run(h.rt, 'life-a', ['cat', '/root/note.txt']);
    expect(r.result).toEqual({ exitCode: 0, signal: null, timedOut: false });
    expect(r.stdout).toBe('hello from a\n');
    // Starting a running machine again is a no-op: same sandbox.
    const before = await h.rt.sandboxInfo('life-a');
    await h.rt.start(h.spec('life-a'));
    expect((await h.rt.sandboxInfo('life-a'))?.initPid).toBe(before?.initPid);
  });

  test('an unknown machine is absent; stop and resize on it fail retryably', async () => {
    expect((await h.rt.inspect('never-made', h.rt.hostId)).state).toBe('absent');
    expect((await h.rt.inspect('life-a', 'some-other-host')).hostGone).toBe(true);
    const err = await h.rt.stop('never-made').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RuntimeError);
    expect((err as RuntimeError).reason).toBe('SandboxLost');
    expect((err as RuntimeError).retryable).toBe(true);
    await expect(h.rt.resize(h.spec('never-made'))).rejects.toBeInstanceOf(RuntimeError);
    await h.rt.destroy('never-made'); // absent already: nothing to do
  });

  test('sleep stops a counting process, wake resumes it where it was', async () => {
    await h.boot('life-sleep');
    const counter = await h.rt.exec(
      'life-sleep',
      { argv: ['sh', '-c', 'i=0; while :; do i=$((i+1)); echo $i > /root/count.tmp; mv /root/count.tmp /root/count; sleep 0.05; done'] },
      () => undefined,
    );
    const info = await h.rt.sandboxInfo('life-sleep');
    if (info === null) throw new Error('no sandbox');
    // Read the counter from the host through the sandbox's root: works while it is frozen.
    const countFile = `/proc/${info.initPid}/root/root/count`;
    const count = async () => Number((await readFile(countFile, 'utf8').catch(() => '0')).trim() || '0');
    await waitUntil('counter running', async () => (await count()) >= 3);

    await h.rt.stop('life-sleep');
    expect((await h.rt.inspect('life-sleep', h.rt.hostId)).state).toBe('sleeping');
    const frozenAt = await count();
    const cpuAt = await h.rt.cpuUsageUsec('life-sleep');
    // Over a window in which an awake counter would tick ~10 times, it must not move at all.
    await new Promise((r) => setTimeout(r, 500));
    expect(await count()).toBe(frozenAt);
    expect(await h.rt.cpuUsageUsec('life-sleep')).toBe(cpuAt);
    await expect(h.rt.exec('life-sleep', { argv: ['true'] }, () => undefined)).rejects.toMatchObject({ reason: 'MachineNotRunning' });
    await h.rt.stop('life-sleep'); // idempotent

    const t0 = performance.now();
    await h.rt.start(h.spec('life-sleep'));
    const wakeMs = performance.now() - t0;
    expect((await h.rt.inspect('life-sleep', h.rt.hostId)).state).toBe('running');
    // Memory was kept: the same process continues from its own in-memory value.
    await waitUntil('counter resumed', async () => (await count()) > frozenAt);
    expect(await count()).toBeLessThan(frozenAt + 5);
    counter.kill();
    const done = await counter.done;
    expect(done.signal).toBe(9);
    console.log(`wake took ${wakeMs.toFixed(1)} ms`);
  });

  test('a sandbox whose init dies is absent, listeners hear of it, and it boots again with its storage', async () => {
    const exited: string[] = [];
    h.rt.onSandboxExit((id) => exited.push(id));
    await h.boot('life-die');
    await sh(h.rt, 'life-die', 'echo kept > /root/kept.txt');
    const info = await h.rt.sandboxInfo('life-die');
    if (info === null) throw new Error('no sandbox');
    process.kill(info.initPid, 'SIGKILL');
    await waitUntil('exit listener called', () => exited.includes('life-die'));
    expect((await h.rt.inspect('life-die', h.rt.hostId)).state).toBe('absent');
    await expect(h.rt.exec('life-die', { argv: ['true'] }, () => undefined)).rejects.toMatchObject({ reason: 'MachineNotRunning' });

    await h.rt.start(h.spec('life-die'));
    expect((await h.rt.inspect('life-die', h.rt.hostId)).state).toBe('running');
    expect(await sh(h.rt, 'life-die', 'cat /root/kept.txt')).toBe('kept\n');
  });

  test('destroy leaves no process, cgroup, mount, loop device or file', async () => {
    await h.boot('life-gone');
    let bgOut = '';
    const bg = await h.rt.exec('life-gone', { argv: ['sh', '-c', 'echo up; exec sleep 1000'] }, (_, c) => (bgOut += c.toString()));
    await waitUntil('background process up', () => bgOut.includes('up'));
    await h.rt.stop('life-gone'); // destroying a sleeping machine must work too
    const info = await h.rt.sandboxInfo('life-gone');
    if (info === null) throw new Error('no sandbox');
    expect(await findCgroupDirs('life-gone')).not.toEqual([]);
    expect(await mountsUnder(info.machineDir)).not.toEqual([]);

    await h.rt.destroy('life-gone');
    expect(await processExists(info.initPid)).toBe(false);
    expect(await processExists(info.monitorPid)).toBe(false);
    expect((await bg.done).signal).toBe(9);
    expect(await findCgroupDirs('life-gone')).toEqual([]);
    expect(await mountsUnder(info.machineDir)).toEqual([]);
    expect(await loopsUnder(info.machineDir)).toEqual([]);
    await expect(stat(info.machineDir)).rejects.toMatchObject({ code: 'ENOENT' });
    expect((await h.rt.inspect('life-gone', h.rt.hostId)).state).toBe('absent');
    await h.rt.destroy('life-gone'); // idempotent
  });

  test('a new runtime on the same state dir (controlplane restart) recovers its machines', async () => {
    await h.boot('rec-run');
    await h.boot('rec-sleep');
    await h.boot('rec-orphan');
    await sh(h.rt, 'rec-run', 'echo survived > /root/s.txt');
    await h.rt.stop('rec-sleep');
    const before = await h.rt.sandboxInfo('rec-run');
    const orphan = await h.rt.sandboxInfo('rec-orphan');
    if (before === null || orphan === null) throw new Error('no sandbox');
    await h.rt.close();

    h.rt = await h.reopen();
    await h.rt.recover([
      { machineId: 'rec-run', hostId: h.rt.hostId, state: 'running', sizes: h.spec('rec-run').sizes },
      { machineId: 'rec-sleep', hostId: h.rt.hostId, state: 'sleeping', sizes: h.spec('rec-sleep').sizes },
    ]);
    expect((await h.rt.inspect('rec-run', h.rt.hostId)).state).toBe('running');
    expect((await h.rt.inspect('rec-sleep', h.rt.hostId)).state).toBe('sleeping');
    // The same sandbox, not a second one.
    expect((await h.rt.sandboxInfo('rec-run'))?.initPid).toBe(before.initPid);
    expect(await sh(h.rt, 'rec-run', 'cat /root/s.txt')).toBe('survived\n');
    await h.rt.start(h.spec('rec-sleep'));
    expect((await h.rt.inspect('rec-sleep', h.rt.hostId)).state).toBe('running');
    expect(await sh(h.rt, 'rec-sleep', 'echo awake')).toBe('awake\n');
    // The store did not know rec-orphan: cleaned up.
    expect((await h.rt.inspect('rec-orphan', h.rt.hostId)).state).toBe('absent');
    expect(await processExists(orphan.initPid)).toBe(false);
    expect(await findCgroupDirs('rec-orphan')).toEqual([]);
    expect(await mountsUnder(orphan.machineDir)).toEqual([]);
  });
});
