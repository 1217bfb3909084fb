import { randomBytes } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { harness, hostUids, run, sh, START_MODES, type Harness } from './helpers.js';

describe.each(START_MODES)('local runtime isolation (%s start)', { timeout: 60_000 }, (mode) => {
  let h: Harness;
  const secret = `/tmp/hangar-host-secret-${randomBytes(6).toString('hex')}`;
  beforeAll(async () => {
    h = await harness(mode);
    await writeFile(secret, 'host only\n');
    await h.boot('iso-a');
    await h.boot('iso-b');
  });
  afterAll(async () => {
    await rm(secret, { force: true });
    await h.cleanup();
  });

  test('the machine sees its own root filesystem, not the host\'s', async () => {
    for (const path of [secret, '/work/main/package.json', h.stateDir]) {
      const r = await run(h.rt, 'iso-a', ['cat', path]);
      expect(r.result.exitCode, path).not.toBe(0);
    }
    // The machine has an /etc/shadow, but it is the image's, not the host's.
    const hostShadow = await readFile('/etc/shadow', 'utf8');
    const inside = await run(h.rt, 'iso-a', ['cat', '/etc/shadow']);
    expect(inside.stdout).not.toBe(hostShadow);
    expect(await sh(h.rt, 'iso-a', 'cat /etc/os-release')).toContain('hangar-busybox');
  });

  test('one machine cannot see another machine\'s files', async () => {
    await sh(h.rt, 'iso-a', 'echo mine > /root/only-in-a; echo tampered >> /etc/passwd');
    expect(await sh(h.rt, 'iso-b', 'ls -a /root')).not.toContain('only-in-a');
    expect(await sh(h.rt, 'iso-b', 'find / -name only-in-a 2>/dev/null; true')).toBe('');
    // Writes to image files stay in the writer's own layer.
    expect(await sh(h.rt, 'iso-b', 'cat /etc/passwd')).not.toContain('tampered');
  });

  test('the machine sees only its own processes', async () => {
    const pids = (await sh(h.rt, 'iso-a', 'ls /proc | grep -E "^[0-9]+$"')).trim().split('\n').map(Number);
    // bwrap's pid 1, the idle init, the exec helper chain and ls/grep: a handful, never the host's.
    expect(pids.length).toBeLessThan(10);
    const cmdlines = await sh(h.rt, 'iso-a', 'cat /proc/[0-9]*/cmdline | tr "\\0" " "');
    expect(cmdlines).not.toMatch(/vitest|node/);
    expect(cmdlines).not.toContain(h.stateDir);
    expect(await sh(h.rt, 'iso-a', 'kill -0 1 && echo ok')).toBe('ok\n');
    expect((await run(h.rt, 'iso-a', ['kill', '-0', String(process.pid)])).result.exitCode).not.toBe(0);
  });

  test('the machine has only a loopback network', async () => {
    const devs = (await sh(h.rt, 'iso-a', "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '")).trim().split('\n');
    expect(devs).toEqual(['lo']);
    expect(await sh(h.rt, 'iso-a', 'hostname')).toBe('iso-a\n');
  });

  test('root inside is not root outside', async () => {
    expect(await sh(h.rt, 'iso-a', 'id -u')).toBe('0\n');
    const info = await h.rt.sandboxInfo('iso-a');
    if (info === null) throw new Error('no sandbox');
    for (const pid of [info.initPid, info.monitorPid]) {
      const uids = await hostUids(pid);
      expect(uids).toHaveLength(4);
      for (const uid of uids) expect(uid).not.toBe(0);
    }
    // Files root creates inside belong to an unprivileged id on the host.
    const uidMap = (await readFile(`/proc/${info.initPid}/uid_map`, 'utf8')).trim().split(/\s+/).map(Number);
    expect(uidMap[0]).toBe(0);
    expect(uidMap[1]).toBeGreaterThan(0);
  });

  test('sandboxes run in their own session, detached from the controlplane', async () => {
    const info = await h.rt.sandboxInfo('iso-a');
    if (info === null) throw new Error('no sandbox');
    const field = async (pid: number, n: number) => {
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
      return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[n - 3]);
    };
    // Fields 5 (pgrp) and 6 (session).
    expect(await field(info.monitorPid, 6)).not.toBe(await field(process.pid, 6));
    expect(await field(info.monitorPid, 5)).not.toBe(await field(process.pid, 5));
  });
});
