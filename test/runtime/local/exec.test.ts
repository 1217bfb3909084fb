import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { harness, run, sh, waitUntil, type Harness } from './helpers.js';

describe('local runtime exec', { timeout: 60_000 }, () => {
  let h: Harness;
  beforeAll(async () => {
    h = await harness();
    await h.boot('ex');
  });
  afterAll(async () => {
    await h.cleanup();
  });

  test('argv without a shell, exit status, stdin, env, cwd', async () => {
    const echo = await run(h.rt, 'ex', ['echo', 'a  b', '$HOME']);
    expect(echo.stdout).toBe('a  b $HOME\n');
    expect((await run(h.rt, 'ex', ['sh', '-c', 'exit 7'])).result).toEqual({ exitCode: 7, signal: null, timedOut: false });
    expect((await run(h.rt, 'ex', ['cat'], { stdin: 'from stdin' })).stdout).toBe('from stdin');
    expect((await run(h.rt, 'ex', ['cat'])).result.exitCode).toBe(0); // no stdin: EOF at once
    expect((await run(h.rt, 'ex', ['sh', '-c', 'echo "$FOO|$HOME|$PATH"'], { env: { FOO: 'bar baz' } })).stdout).toBe(
      'bar baz|/root|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n',
    );
    expect((await run(h.rt, 'ex', ['pwd'])).stdout).toBe('/root\n');
    expect((await run(h.rt, 'ex', ['pwd'], { cwd: '/tmp' })).stdout).toBe('/tmp\n');
    const err = await run(h.rt, 'ex', ['sh', '-c', 'echo oops >&2; exit 1']);
    expect(err.stderr).toBe('oops\n');
    expect(err.stdout).toBe('');
  });

  test('a missing executable or a bad cwd is a start error, not a throw', async () => {
    const missing = await run(h.rt, 'ex', ['no-such-program', 'x']);
    expect(missing.result.startError?.code).toBe('EXECUTABLE_NOT_FOUND');
    expect(missing.result.exitCode).toBeNull();
    expect((await run(h.rt, 'ex', ['/nope/bin/x'])).result.startError?.code).toBe('EXECUTABLE_NOT_FOUND');
    expect((await run(h.rt, 'ex', ['/etc/passwd'])).result.startError?.code).toBe('PERMISSION_DENIED');
    const badCwd = await run(h.rt, 'ex', ['pwd'], { cwd: '/does/not/exist' });
    expect(badCwd.result.startError?.code).toBe('CWD_NOT_FOUND');
    expect(badCwd.result.startError?.message).toContain('/does/not/exist');
  });

  test('timeout kills the whole process group and reports timedOut', async () => {
    const t0 = Date.now();
    const r = await run(h.rt, 'ex', ['sh', '-c', 'sleep 300 & sleep 300; wait'], { timeoutMs: 300 });
    expect(r.result.timedOut).toBe(true);
    expect(r.result.signal).toBe(9);
    expect(Date.now() - t0).toBeLessThan(5_000);
    // Neither sleep survived.
    await waitUntil('no sleep 300 left', async () => !(await sh(h.rt, 'ex', 'ps -o args')).includes('sleep 300'));
  });

  test('output streams while the command runs; kill() ends it', async () => {
    let out = '';
    const handle = await h.rt.exec('ex', { argv: ['sh', '-c', 'echo first; exec sleep 300'] }, (_, c) => (out += c.toString()));
    await waitUntil('first chunk', () => out === 'first\n');
    handle.kill();
    handle.kill(); // idempotent
    const result = await handle.done;
    expect(result).toEqual({ exitCode: null, signal: 9, timedOut: false });
  });

  test('exec runs inside the machine\'s cgroup', async () => {
    const cg = await sh(h.rt, 'ex', 'cat /proc/self/cgroup');
    // A cgroup namespace rooted at the machine's cgroup: every hierarchy reads "/".
    for (const line of cg.trim().split('\n')) expect(line.endsWith(':/')).toBe(true);
  });
});
