/**
 * The Machine Executions API over real HTTP (simulated runtime: its built-in
 * echo, cat, true, false and sleep): shapes against the reference schemas,
 * pagination, idempotency, bad input, failures, cancel, timeout, truncation,
 * waking a sleeping machine, tenancy.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey } from '../../src/api/api-keys.js';
import { Api } from '../helpers/http.js';
import type { ApiResponse } from '../helpers/http.js';
import { assertMatchesReference } from '../helpers/reference-schemas.js';
import type { TestServer } from '../helpers/server.js';
import { startTestServer } from '../helpers/server.js';

const OUTPUT_LIMIT = 64;
const STDIN_LIMIT = 1024;
const TERMINAL = ['succeeded', 'failed', 'cancelled', 'expired'];

let server: TestServer;
let api: Api;
let machineId: string;

beforeAll(async () => {
  server = await startTestServer({ env: { EXEC_OUTPUT_LIMIT_BYTES: String(OUTPUT_LIMIT), EXEC_STDIN_LIMIT_BYTES: String(STDIN_LIMIT) } });
  api = new Api(server.url, server.adminKey);
  machineId = await runningMachine();
});
afterAll(() => server.close());

async function runningMachine(body: Record<string, unknown> = { vcpu: 1, memory_mib: 512, storage_gib: 5 }): Promise<string> {
  const { body: m } = await api.createMachine(body);
  await api.waitForPhase(m.machine_id, 'running');
  return m.machine_id as string;
}

const base = (mid: string) => `/v1/machines/${mid}/executions`;

async function exec(body: Record<string, unknown>, mid = machineId): Promise<any> {
  const res = await api.post(base(mid), body);
  expect(res.status, res.text).toBe(200);
  assertMatchesReference('ExecutionResponse', res.body);
  return res.body;
}

/** Polls GET until the execution satisfies `predicate` (10 ms apart, bounded). */
async function waitForExecution(mid: string, id: string, predicate: (e: any) => boolean, timeoutMs = 10_000): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    const res = await api.get(`${base(mid)}/${id}`);
    last = res.body;
    if (res.status === 200 && predicate(res.body)) {
      assertMatchesReference('ExecutionResponse', res.body);
      return res.body;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for execution ${id}; last seen ${JSON.stringify(last)}`);
}

const ended = (mid: string, id: string) => waitForExecution(mid, id, (e) => TERMINAL.includes(e.status));

/** Every event, following next_cursor page by page, each page checked against the reference. */
async function allEvents(mid: string, id: string, limit = 500): Promise<any[]> {
  const items: any[] = [];
  let cursor: string | undefined;
  for (let pages = 0; pages < 1000; pages++) {
    const res = await api.get(`${base(mid)}/${id}/events?limit=${limit}${cursor !== undefined ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    expect(res.status, res.text).toBe(200);
    assertMatchesReference('ExecutionEventsResponse', res.body);
    items.push(...res.body.items);
    cursor = res.body.next_cursor;
    if (cursor === undefined) return items;
  }
  throw new Error('events did not end');
}

function expectError(res: ApiResponse<any>, status: number, code: string, detailKey?: string): void {
  expect(res.status, res.text).toBe(status);
  expect(res.body.error_code).toBe(code);
  if (detailKey !== undefined) expect(Object.keys(res.body.details ?? {}).some((k) => k === detailKey || k.startsWith(`${detailKey}.`)), res.text).toBe(true);
}

describe('running commands', () => {
  it('echo: the response, the finished execution, its events and output match the reference', async () => {
    const created = await exec({ command: ['echo', 'hello', 'world'] });
    expect(created.execution_id).toMatch(/^ex-[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(created).toMatchObject({ machine_id: machineId, command: ['echo', 'hello', 'world'] });
    expect(['queued', 'running', 'succeeded']).toContain(created.status);

    const done = await ended(machineId, created.execution_id);
    expect(done).toMatchObject({ status: 'succeeded', exit_code: 0, stdout_bytes: 12, stderr_bytes: 0, stdout_truncated: false, stderr_truncated: false });
    expect(Date.parse(done.completed_at)).toBeGreaterThanOrEqual(Date.parse(done.started_at));
    expect(done).not.toHaveProperty('error_code');

    const out = await api.get(`${base(machineId)}/${created.execution_id}/output`);
    expect(out.status).toBe(200);
    assertMatchesReference('ExecutionOutputResponse', out.body);
    expect(out.body).toEqual({
      execution_id: created.execution_id,
      stdout: 'hello world\n',
      stderr: '',
      stdout_bytes: 12,
      stderr_bytes: 0,
      stdout_truncated: false,
      stderr_truncated: false,
    });

    const events = await allEvents(machineId, created.execution_id);
    const sequences = events.map((e) => e.sequence);
    for (let i = 1; i < sequences.length; i++) expect(sequences[i]).toBeGreaterThan(sequences[i - 1]);
    const lifecycle = events.filter((e) => e.type === 'lifecycle').map((e) => e.status);
    expect(lifecycle).toEqual(['queued', 'running', 'succeeded']);
    expect(events.filter((e) => e.type === 'stdout').map((e) => e.chunk).join('')).toBe('hello world\n');
    expect(events[events.length - 1]).toMatchObject({ type: 'lifecycle', status: 'succeeded', exit_code: 0 });
  });

  it('cat gets stdin; cwd is echoed; env keys are echoed and values never leave', async () => {
    const secret = `s3cret-${randomUUID()}`;
    const created = await exec({ command: ['cat'], stdin: 'from stdin\n', cwd: '/root', env: { TOKEN: secret, A: '1' } });
    expect(created.env_keys).toEqual(['A', 'TOKEN']);
    expect(created.cwd).toBe('/root');
    const done = await ended(machineId, created.execution_id);
    expect(done.status).toBe('succeeded');
    const out = await api.get(`${base(machineId)}/${created.execution_id}/output`);
    expect(out.body.stdout).toBe('from stdin\n');
    const everything = [JSON.stringify(done), (await api.get(base(machineId) + '?limit=500')).text, JSON.stringify(await allEvents(machineId, created.execution_id))];
    for (const text of everything) expect(text).not.toContain(secret);
  });

  it('a non-zero exit is failed with its exit code', async () => {
    const created = await exec({ command: ['false'] });
    const done = await ended(machineId, created.execution_id);
    expect(done).toMatchObject({ status: 'failed', exit_code: 1 });
  });

  it('a missing executable is failed with an error code and message, not a 500; there is no shell', async () => {
    for (const command of [['no-such-program', '--flag'], ['sh', '-c', 'echo hi']]) {
      const created = await exec({ command });
      const done = await ended(machineId, created.execution_id);
      expect(done).toMatchObject({ status: 'failed', error_code: 'EXECUTABLE_NOT_FOUND' });
      expect(done.error_message).toContain(command[0]);
      expect(done).not.toHaveProperty('exit_code');
      const events = await allEvents(machineId, created.execution_id);
      expect(events[events.length - 1]).toMatchObject({ type: 'lifecycle', status: 'failed', error_code: 'EXECUTABLE_NOT_FOUND' });
    }
  });

  it('DELETE cancels a running execution, and returns it unchanged afterwards', async () => {
    const created = await exec({ command: ['sleep', '60'] });
    await waitForExecution(machineId, created.execution_id, (e) => e.status === 'running');
    const del = await api.delete(`${base(machineId)}/${created.execution_id}`);
    expect(del.status, del.text).toBe(200);
    assertMatchesReference('ExecutionResponse', del.body);
    expect(del.body).toMatchObject({ execution_id: created.execution_id, status: 'cancelled', signal: 9 });
    expect(del.body.completed_at).toBeDefined();
    const again = await api.delete(`${base(machineId)}/${created.execution_id}`);
    expect(again.body).toMatchObject({ status: 'cancelled', completed_at: del.body.completed_at });
    const got = await api.get(`${base(machineId)}/${created.execution_id}`);
    expect(got.body.status).toBe('cancelled');
    const events = await allEvents(machineId, created.execution_id);
    expect(events.filter((e) => e.type === 'lifecycle').map((e) => e.status)).toEqual(['queued', 'running', 'cancelled']);
  });

  it('timeout_ms kills the command: failed with EXECUTION_TIMEOUT', async () => {
    const created = await exec({ command: ['sleep', '60'], timeout_ms: 100 });
    expect(created.status).not.toBe('failed');
    const done = await ended(machineId, created.execution_id);
    expect(done).toMatchObject({ status: 'failed', error_code: 'EXECUTION_TIMEOUT', signal: 9 });
    expect(Date.parse(done.completed_at) - Date.parse(done.started_at)).toBeGreaterThanOrEqual(90);
  });

  it('output past the limit is counted but not kept', async () => {
    const long = 'x'.repeat(200);
    const created = await exec({ command: ['echo', long] });
    const done = await ended(machineId, created.execution_id);
    expect(done).toMatchObject({ status: 'succeeded', stdout_bytes: 201, stdout_truncated: true, stderr_truncated: false });
    const out = await api.get(`${base(machineId)}/${created.execution_id}/output`);
    expect(out.body).toMatchObject({ stdout: long.slice(0, OUTPUT_LIMIT), stdout_bytes: 201, stdout_truncated: true });
    const chunks = (await allEvents(machineId, created.execution_id)).filter((e) => e.type === 'stdout');
    expect(chunks.map((e) => e.chunk).join('')).toBe(long.slice(0, OUTPUT_LIMIT));
  });

  it('a destroyed machine fails its running execution', async () => {
    const mid = await runningMachine();
    const created = await exec({ command: ['sleep', '60'] }, mid);
    await waitForExecution(mid, created.execution_id, (e) => e.status === 'running');
    expect((await api.delete(`/v1/machines/${mid}`)).status).toBe(202);
    const done = await ended(mid, created.execution_id);
    expect(done).toMatchObject({ status: 'failed', error_code: 'MACHINE_DESTROYED' });
    await api.waitForPhase(mid, 'destroyed');
    expectError(await api.post(base(mid), { command: ['true'] }), 409, 'INVALID_STATE');
    // Still readable with its machine.
    expect((await api.get(`${base(mid)}/${created.execution_id}`)).status).toBe(200);
  });
});

describe('listing and events', () => {
  it('lists with limit and an opaque cursor; next_cursor is absent on the last page', async () => {
    const mid = await runningMachine();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await exec({ command: ['true'] }, mid)).execution_id);
    const seen: string[] = [];
    let cursor: string | undefined;
    const sizes: number[] = [];
    do {
      const res = await api.get(`${base(mid)}?limit=2${cursor !== undefined ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      expect(res.status, res.text).toBe(200);
      assertMatchesReference('ExecutionListResponse', res.body);
      sizes.push(res.body.items.length);
      seen.push(...res.body.items.map((e: any) => e.execution_id));
      cursor = res.body.next_cursor;
    } while (cursor !== undefined);
    expect(sizes).toEqual([2, 2, 1]);
    expect(seen).toEqual(ids);
    const all = await api.get(base(mid));
    expect(all.body.items).toHaveLength(5);
    expect(all.body).not.toHaveProperty('next_cursor');
  });

  it('bad limits and cursors are 400', async () => {
    expectError(await api.get(`${base(machineId)}?limit=0`), 400, 'INVALID_ARGUMENT', 'query.limit');
    expectError(await api.get(`${base(machineId)}?limit=501`), 400, 'INVALID_ARGUMENT', 'query.limit');
    expectError(await api.get(`${base(machineId)}?cursor=bm9wZQ`), 400, 'INVALID_ARGUMENT', 'query.cursor');
    const created = await exec({ command: ['true'] });
    expectError(await api.get(`${base(machineId)}/${created.execution_id}/events?cursor=bm9wZQ`), 400, 'INVALID_ARGUMENT', 'query.cursor');
  });

  it('events page one at a time with strictly increasing sequences, and end when the execution has', async () => {
    const created = await exec({ command: ['echo', 'paged'] });
    await ended(machineId, created.execution_id);
    const one = await allEvents(machineId, created.execution_id, 1);
    const all = await allEvents(machineId, created.execution_id);
    expect(one).toEqual(all);
    expect(all.length).toBeGreaterThanOrEqual(4);
    expect(all.map((e) => e.sequence)).toEqual([...all.map((e) => e.sequence)].sort((a, b) => a - b));
    expect(new Set(all.map((e) => e.sequence)).size).toBe(all.length);
  });

  it('a running execution keeps offering a cursor, so a follower sees every event to the end', async () => {
    const created = await exec({ command: ['sleep', '0.3'] });
    const first = await api.get(`${base(machineId)}/${created.execution_id}/events`);
    expect(first.body.next_cursor).toBeDefined();
    const rest = await allEvents(machineId, created.execution_id);
    expect(rest[rest.length - 1]).toMatchObject({ type: 'lifecycle', status: 'succeeded' });
  });
});

describe('idempotency', () => {
  it('a repeated create with the same key replays the first answer and runs once', async () => {
    const mid = await runningMachine();
    const headers = { 'idempotency-key': `exec-${randomUUID()}` };
    const first = await api.post(base(mid), { command: ['echo', 'once'] }, { headers });
    const second = await api.post(base(mid), { command: ['echo', 'once'] }, { headers });
    expect(first.status).toBe(200);
    expect(second.status).toBe(200);
    expect(second.body.execution_id).toBe(first.body.execution_id);
    expect((await api.get(base(mid))).body.items).toHaveLength(1);
    const other = await api.post(base(mid), { command: ['echo', 'twice'] }, { headers });
    expectError(other, 409, 'IDEMPOTENCY_KEY_REUSED');
  });
});

describe('bad input: 400 and no execution created', () => {
  const cases: [string, unknown, string][] = [
    ['empty argv', { command: [] }, 'body.command'],
    ['null argv', { command: null }, 'body.command'],
    ['missing argv', { cwd: '/' }, 'body.command'],
    ['argv not an array', { command: 'echo hi' }, 'body.command'],
    ['non-string argv', { command: ['echo', 1] }, 'body.command'],
    ['empty string in argv', { command: ['echo', ''] }, 'body.command'],
    ['unknown field', { command: ['true'], shell: true }, 'body.shell'],
    ['zero timeout', { command: ['true'], timeout_ms: 0 }, 'body.timeout_ms'],
    ['negative timeout', { command: ['true'], timeout_ms: -5 }, 'body.timeout_ms'],
    ['fractional timeout', { command: ['true'], timeout_ms: 1.5 }, 'body.timeout_ms'],
    ['string timeout', { command: ['true'], timeout_ms: '100' }, 'body.timeout_ms'],
    ['stdin over the limit', { command: ['cat'], stdin: 'y'.repeat(STDIN_LIMIT + 1) }, 'body.stdin'],
    ['non-string env value', { command: ['true'], env: { A: 1 } }, 'body.env'],
    ['env name with =', { command: ['true'], env: { 'A=B': '1' } }, 'body.env'],
    ['empty cwd', { command: ['true'], cwd: '' }, 'body.cwd'],
    ['array body', [['true']], 'body'],
  ];
  it.each(cases)('%s', async (_name, body, detail) => {
    const mid = await runningMachine();
    const res = await api.request('POST', base(mid), { rawBody: JSON.stringify(body) });
    expectError(res, 400, 'INVALID_ARGUMENT', detail);
    expect(res.headers.get('x-should-retry')).toBe('false');
    expect((await api.get(base(mid))).body.items).toHaveLength(0);
  });

  it('malformed JSON is 400', async () => {
    expectError(await api.request('POST', base(machineId), { rawBody: '{"command": [' }), 400, 'INVALID_ARGUMENT', 'body');
  });

  it('bad and unknown ids', async () => {
    const created = await exec({ command: ['true'] });
    const other = await runningMachine();
    expectError(await api.get(`${base(machineId)}/-bad-`), 400, 'INVALID_ARGUMENT', 'path.execution_id');
    expectError(await api.get(`${base(machineId)}/bad..id_`), 400, 'INVALID_ARGUMENT', 'path.execution_id');
    expectError(await api.get(`/v1/machines/not-a-machine/executions`), 400, 'INVALID_ARGUMENT', 'path.machine_id');
    for (const suffix of ['', '/events', '/output']) {
      expectError(await api.get(`${base(machineId)}/ex-unknown${suffix}`), 404, 'EXECUTION_NOT_FOUND');
      // An execution is found only under its own machine.
      expectError(await api.get(`${base(other)}/${created.execution_id}${suffix}`), 404, 'EXECUTION_NOT_FOUND');
    }
    expectError(await api.delete(`${base(machineId)}/ex-unknown`), 404, 'EXECUTION_NOT_FOUND');
    expectError(await api.post(`/v1/machines/dm-00000000-0000-7000-8000-000000000000/executions`, { command: ['true'] }), 404, 'MACHINE_NOT_FOUND');
  });

  it("another org's machine and executions do not exist", async () => {
    const created = await exec({ command: ['true'] });
    const { key } = await createApiKey(server.hangar.store, { orgId: randomUUID(), scope: 'user', name: 'other org' });
    const stranger = new Api(server.url, key);
    expectError(await stranger.post(base(machineId), { command: ['true'] }), 404, 'MACHINE_NOT_FOUND');
    expectError(await stranger.get(base(machineId)), 404, 'MACHINE_NOT_FOUND');
    for (const suffix of ['', '/events', '/output']) {
      expectError(await stranger.get(`${base(machineId)}/${created.execution_id}${suffix}`), 404, 'MACHINE_NOT_FOUND');
    }
    expectError(await stranger.delete(`${base(machineId)}/${created.execution_id}`), 404, 'MACHINE_NOT_FOUND');
  });
});

describe('machines that are not running', () => {
  it('a sleeping machine is woken: wake_in_progress, then the command runs', async () => {
    const mid = await runningMachine();
    expect((await api.post(`/v1/machines/${mid}/sleep`)).status).toBe(202);
    await api.waitForPhase(mid, 'sleeping');
    const created = await exec({ command: ['echo', 'awake'] }, mid);
    expect(created.status).toBe('wake_in_progress');
    expect(created.retry_after_ms).toBeGreaterThan(0);
    const machine = (await api.get(`/v1/machines/${mid}`)).body;
    // The wake is committed before the answer (the reconciler then starts the machine).
    expect(machine.desired_state).toBe('running');
    const done = await ended(mid, created.execution_id);
    expect(done).toMatchObject({ status: 'succeeded', exit_code: 0 });
    expect(done).not.toHaveProperty('retry_after_ms');
    expect((await api.get(`${base(mid)}/${created.execution_id}/output`)).body.stdout).toBe('awake\n');
    expect((await api.get(`/v1/machines/${mid}`)).body.status.phase).toBe('running');
    const lifecycle = (await allEvents(mid, created.execution_id)).filter((e) => e.type === 'lifecycle').map((e) => e.status);
    expect(lifecycle).toEqual(['wake_in_progress', 'running', 'succeeded']);
  });

  it('a machine still being created queues the command until it runs', async () => {
    const { body: m } = await api.createMachine();
    const created = await exec({ command: ['echo', 'early'] }, m.machine_id);
    expect(['queued', 'running']).toContain(created.status);
    const done = await ended(m.machine_id, created.execution_id);
    expect(done.status).toBe('succeeded');
  });

  it('a queued execution can be cancelled before it starts', async () => {
    const mid = await runningMachine();
    expect((await api.post(`/v1/machines/${mid}/sleep`)).status).toBe(202);
    await api.waitForPhase(mid, 'sleeping');
    // Hold the machine asleep: the runtime fails every start until the test lets it.
    server.sim!.setFaults({ failureRate: 1, retryable: true, hostLossRate: 0 });
    try {
      const created = await exec({ command: ['echo', 'never'] }, mid);
      expect(created.status).toBe('wake_in_progress');
      const del = await api.delete(`${base(mid)}/${created.execution_id}`);
      expect(del.body).toMatchObject({ status: 'cancelled' });
      expect(del.body).not.toHaveProperty('started_at');
    } finally {
      server.sim!.setFaults({ failureRate: 0, retryable: true, hostLossRate: 0 });
    }
  });

  it('a running execution keeps its machine awake past its autosleep', async () => {
    const mid = await runningMachine({ vcpu: 1, memory_mib: 512, storage_gib: 5, autosleep: '1s' });
    const created = await exec({ command: ['sleep', '2.5'] }, mid);
    const done = await ended(mid, created.execution_id);
    expect(done.status).toBe('succeeded');
    const machine = (await api.get(`/v1/machines/${mid}`)).body;
    expect(machine.desired_state).toBe('running');
    // Once idle, autosleep takes it.
    await api.waitForPhase(mid, 'sleeping');
  });
});
