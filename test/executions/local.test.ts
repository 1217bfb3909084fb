/**
 * The executions API on the REAL local runtime (Linux sandboxes; needs root
 * and scripts/setup-host.sh, as CI has): files persist between executions,
 * stderr and exit codes, start errors, the memory limit, timeout and cancel
 * (the process group is gone), waking a sleeping machine, and destroy.
 */
import { chmod, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLocalRuntime, type LocalRuntime } from '../../src/runtime/local/index.js';
import { Api } from '../helpers/http.js';
import { assertMatchesReference } from '../helpers/reference-schemas.js';
import type { TestServer } from '../helpers/server.js';
import { startTestServer } from '../helpers/server.js';

const TERMINAL = ['succeeded', 'failed', 'cancelled', 'expired'];

describe('executions on the local runtime', { timeout: 60_000 }, () => {
  let work: string;
  let stateDir: string;
  let runtime: LocalRuntime;
  let server: TestServer;
  let api: Api;
  let machineId: string;
  const machines: string[] = [];

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'hangar-exec-local-'));
    // The sandboxes' unprivileged setup walks through it to the state dir.
    await chmod(work, 0o711);
    stateDir = join(work, 'state');
    runtime = await createLocalRuntime({ stateDir });
    server = await startTestServer({ runtime });
    api = new Api(server.url, server.adminKey);
    machineId = await machine();
  });

  afterAll(async () => {
    for (const id of machines) await api?.delete(`/v1/machines/${id}`);
    for (const id of machines) await api?.waitForPhase(id, 'destroyed', 30_000).catch(() => undefined);
    await server?.close();
    // Whatever is left (a failed test): a fresh runtime on the state dir destroys every sandbox it does not know.
    const sweeper = await createLocalRuntime({ stateDir });
    await sweeper.recover([]);
    await sweeper.close();
    await rm(work, { recursive: true, force: true });
  });

  async function machine(memoryMib = 128): Promise<string> {
    // Small: CI hosts have 2 CPUs, and every machine's vCPUs are reserved on the host.
    const { body } = await api.createMachine({ vcpu: 0.5, memory_mib: memoryMib, storage_gib: 1 });
    machines.push(body.machine_id);
    await api.waitForPhase(body.machine_id, 'running', 30_000);
    return body.machine_id as string;
  }

  async function execute(mid: string, body: Record<string, unknown>): Promise<{ execution: any; output: any }> {
    const created = await api.post(`/v1/machines/${mid}/executions`, body);
    expect(created.status, created.text).toBe(200);
    const execution = await waitFor(mid, created.body.execution_id, (e) => TERMINAL.includes(e.status));
    const output = (await api.get(`/v1/machines/${mid}/executions/${created.body.execution_id}/output`)).body;
    return { execution, output };
  }

  async function waitFor(mid: string, id: string, predicate: (e: any) => boolean): Promise<any> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const res = await api.get(`/v1/machines/${mid}/executions/${id}`);
      if (res.status === 200 && predicate(res.body)) {
        assertMatchesReference('ExecutionResponse', res.body);
        return res.body;
      }
      if (Date.now() > deadline) throw new Error(`execution ${id} never matched; last ${res.text}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  it('a file written by one execution is read by the next', async () => {
    const write = await execute(machineId, { command: ['sh', '-c', 'echo hi > /root/f'] });
    expect(write.execution).toMatchObject({ status: 'succeeded', exit_code: 0 });
    const read = await execute(machineId, { command: ['cat', '/root/f'] });
    expect(read.execution.status).toBe('succeeded');
    expect(read.output).toMatchObject({ stdout: 'hi\n', stdout_bytes: 3 });
  });

  it('stdin, env, cwd, stderr and the exit code reach the user', async () => {
    const { execution, output } = await execute(machineId, {
      command: ['sh', '-c', 'read line; echo "$line $GREETING $(pwd)"; echo oops >&2; exit 3'],
      stdin: 'from-stdin\n',
      env: { GREETING: 'hello' },
      cwd: '/tmp',
    });
    expect(execution).toMatchObject({ status: 'failed', exit_code: 3, env_keys: ['GREETING'], cwd: '/tmp' });
    expect(output).toMatchObject({ stdout: 'from-stdin hello /tmp\n', stderr: 'oops\n', stderr_bytes: 5 });
  });

  it('a missing executable or directory is a failed execution with an error code', async () => {
    const missing = await execute(machineId, { command: ['no-such-program'] });
    expect(missing.execution).toMatchObject({ status: 'failed', error_code: 'EXECUTABLE_NOT_FOUND' });
    const badCwd = await execute(machineId, { command: ['true'], cwd: '/no/such/dir' });
    expect(badCwd.execution).toMatchObject({ status: 'failed', error_code: 'CWD_NOT_FOUND' });
  });

  it('past its memory limit the command is killed, and the machine keeps working', async () => {
    const hog = await execute(machineId, { command: ['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=300M', 'count=1'] });
    expect(hog.execution).toMatchObject({ status: 'failed', signal: 9 });
    const after = await execute(machineId, { command: ['echo', 'still here'] });
    expect(after.output.stdout).toBe('still here\n');
  });

  it('timeout and cancel kill the whole process group', async () => {
    const timed = await execute(machineId, { command: ['sh', '-c', 'sleep 300 & sleep 301; wait'], timeout_ms: 300 });
    expect(timed.execution).toMatchObject({ status: 'failed', error_code: 'EXECUTION_TIMEOUT', signal: 9 });

    const created = await api.post(`/v1/machines/${machineId}/executions`, { command: ['sh', '-c', 'sleep 302 & sleep 303; wait'] });
    await waitFor(machineId, created.body.execution_id, (e) => e.status === 'running');
    const del = await api.delete(`/v1/machines/${machineId}/executions/${created.body.execution_id}`);
    expect(del.body).toMatchObject({ status: 'cancelled', signal: 9 });

    // No sleep of either command is left in the machine.
    const ps = await execute(machineId, { command: ['ps', '-o', 'args'] });
    expect(ps.execution.status).toBe('succeeded');
    expect(ps.output.stdout).toContain('ps -o args');
    expect(ps.output.stdout).not.toMatch(/sleep 30[0-3]/);
  });

  it('an execution on a sleeping machine wakes it and runs', async () => {
    const mid = await machine();
    await execute(mid, { command: ['sh', '-c', 'echo before-sleep > /root/mark'] });
    expect((await api.post(`/v1/machines/${mid}/sleep`)).status).toBe(202);
    await api.waitForPhase(mid, 'sleeping', 30_000);
    const created = await api.post(`/v1/machines/${mid}/executions`, { command: ['cat', '/root/mark'] });
    expect(created.body.status).toBe('wake_in_progress');
    const done = await waitFor(mid, created.body.execution_id, (e) => TERMINAL.includes(e.status));
    expect(done.status).toBe('succeeded');
    expect((await api.get(`/v1/machines/${mid}/executions/${created.body.execution_id}/output`)).body.stdout).toBe('before-sleep\n');
    expect((await api.get(`/v1/machines/${mid}`)).body.status.phase).toBe('running');
  });

  it('destroy removes the sandbox; its executions stay readable', async () => {
    const mid = await machine();
    const { execution } = await execute(mid, { command: ['true'] });
    const dir = (await runtime.sandboxInfo(mid))?.machineDir;
    expect(dir).toBeDefined();
    expect((await api.delete(`/v1/machines/${mid}`)).status).toBe(202);
    await api.waitForPhase(mid, 'destroyed', 30_000);
    expect(await runtime.sandboxInfo(mid)).toBeNull();
    await expect(stat(dir!)).rejects.toThrow();
    expect((await api.get(`/v1/machines/${mid}/executions/${execution.execution_id}`)).body.status).toBe('succeeded');
    expect((await api.post(`/v1/machines/${mid}/executions`, { command: ['true'] })).status).toBe(409);
  });
});
