/**
 * Bad input gets the contract's envelope (400/401/403/404/409/413), never a
 * 500, and changes nothing: the machine's revision is the same afterwards.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey } from '../../src/api/api-keys.js';
import { Api } from '../helpers/http.js';
import type { ApiResponse } from '../helpers/http.js';
import type { TestServer } from '../helpers/server.js';
import { startTestServer } from '../helpers/server.js';

let server: TestServer;
let api: Api;
let machineId: string;

beforeAll(async () => {
  server = await startTestServer({ env: { BODY_LIMIT_BYTES: '4096' } });
  api = new Api(server.url, server.adminKey);
  const { body } = await api.createMachine({ vcpu: 1, memory_mib: 512, storage_gib: 10 });
  machineId = body.machine_id;
  await api.waitForPhase(machineId, 'running');
});
afterAll(() => server.close());

function expectError(res: ApiResponse<any>, status: number, code: string, detailKey?: string): void {
  expect(res.status, res.text).toBe(status);
  expect(res.body.error_code).toBe(code);
  expect(typeof res.body.message).toBe('string');
  expect(typeof res.body.retryable).toBe('boolean');
  if (detailKey !== undefined) expect(Object.keys(res.body.details ?? {})).toContain(detailKey);
}

async function revision(): Promise<string> {
  return (await api.get(`/v1/machines/${machineId}`)).body.status.revision;
}

async function machineCount(): Promise<number> {
  return (await api.get('/v1/machines?limit=500')).body.items.length;
}

describe('bad create bodies: 400 and no machine created', () => {
  const cases: [string, unknown, string][] = [
    ['unknown field', { vcpu: 1, memory_mib: 512, storage_gib: 5, image: 'ubuntu' }, 'body.image'],
    ['wrong type', { vcpu: '1', memory_mib: 512, storage_gib: 5 }, 'body.vcpu'],
    ['missing field', { vcpu: 1, memory_mib: 512 }, 'body.storage_gib'],
    ['negative vcpu', { vcpu: -1, memory_mib: 512, storage_gib: 5 }, 'body.vcpu'],
    ['zero memory', { vcpu: 1, memory_mib: 0, storage_gib: 5 }, 'body.memory_mib'],
    ['zero storage', { vcpu: 1, memory_mib: 512, storage_gib: 0 }, 'body.storage_gib'],
    ['huge memory', { vcpu: 1, memory_mib: 1e30, storage_gib: 5 }, 'body.memory_mib'],
    ['huge vcpu', { vcpu: 1e9, memory_mib: 512, storage_gib: 5 }, 'body.vcpu'],
    ['fractional memory', { vcpu: 1, memory_mib: 512.5, storage_gib: 5 }, 'body.memory_mib'],
    ['vcpu off the 0.25 grid', { vcpu: 0.3, memory_mib: 512, storage_gib: 5 }, 'body.vcpu'],
    ['bad autosleep', { vcpu: 1, memory_mib: 512, storage_gib: 5, autosleep: '5 minutes' }, 'body.autosleep'],
    ['negative autosleep', { vcpu: 1, memory_mib: 512, storage_gib: 5, autosleep: '-5' }, 'body.autosleep'],
    ['null body', null, 'body'],
    ['array body', [1, 2], 'body'],
  ];
  it.each(cases)('%s', async (_name, body, detail) => {
    const before = await machineCount();
    const res = await api.request('POST', '/v1/machines', { rawBody: JSON.stringify(body) });
    expectError(res, 400, 'INVALID_ARGUMENT', detail);
    expect(res.headers.get('x-should-retry')).toBe('false');
    expect(await machineCount()).toBe(before);
  });

  it('vcpu off the grid names the rule', async () => {
    const res = await api.createMachine({ vcpu: 0.3, memory_mib: 512, storage_gib: 5 });
    expect(res.body.details['body.vcpu']).toBe('must be a multiple of 0.25');
  });

  it('malformed JSON', async () => {
    expectError(await api.request('POST', '/v1/machines', { rawBody: '{"vcpu": 1,' }), 400, 'INVALID_ARGUMENT');
  });

  it('NaN is not JSON', async () => {
    expectError(await api.request('POST', '/v1/machines', { rawBody: '{"vcpu": NaN, "memory_mib": 512, "storage_gib": 5}' }), 400, 'INVALID_ARGUMENT');
  });

  it('a body over the size limit is 413 PAYLOAD_TOO_LARGE', async () => {
    const res = await api.request('POST', '/v1/machines', { rawBody: JSON.stringify({ vcpu: 1, memory_mib: 512, storage_gib: 5, autosleep: 'x'.repeat(10_000) }) });
    expectError(res, 413, 'PAYLOAD_TOO_LARGE');
  });

  it('a request larger than any host is 409 CAPACITY_EXCEEDED', async () => {
    expectError(await api.createMachine({ vcpu: 500, memory_mib: 512, storage_gib: 5 }), 409, 'CAPACITY_EXCEEDED');
  });
});

describe('bad mutations: the machine is unchanged', () => {
  const cases: [string, () => Promise<ApiResponse<any>>, number, string, string?][] = [
    ['storage shrink', () => api.patch(`/v1/machines/${machineId}`, { storage_gib: 5 }), 400, 'INVALID_ARGUMENT', 'body.storage_gib'],
    ['patch unknown field', () => api.patch(`/v1/machines/${machineId}`, { cpu: 2 }), 400, 'INVALID_ARGUMENT', 'body.cpu'],
    ['patch wrong type', () => api.patch(`/v1/machines/${machineId}`, { memory_mib: 'lots' }), 400, 'INVALID_ARGUMENT', 'body.memory_mib'],
    ['patch vcpu off grid', () => api.patch(`/v1/machines/${machineId}`, { vcpu: 1.1 }), 400, 'INVALID_ARGUMENT', 'body.vcpu'],
    ['patch bad autosleep', () => api.patch(`/v1/machines/${machineId}`, { autosleep: '1h1h' }), 400, 'INVALID_ARGUMENT', 'body.autosleep'],
    ['patch beyond the host', () => api.patch(`/v1/machines/${machineId}`, { memory_mib: 16 * 1024 * 1024 }), 409, 'CAPACITY_EXCEEDED'],
    ['stale If-Match on patch', () => api.patch(`/v1/machines/${machineId}`, { vcpu: 2 }, { headers: { 'if-match': '"1"' } }), 409, 'REVISION_MISMATCH', 'expected_revision'],
    ['stale If-Match on sleep', () => api.post(`/v1/machines/${machineId}/sleep`, undefined, { headers: { 'if-match': '1' } }), 409, 'REVISION_MISMATCH', 'provided_revision'],
    ['stale If-Match on delete', () => api.delete(`/v1/machines/${machineId}`, { headers: { 'if-match': '"2"' } }), 409, 'REVISION_MISMATCH'],
    ['garbage If-Match', () => api.post(`/v1/machines/${machineId}/wake`, undefined, { headers: { 'if-match': 'abc' } }), 400, 'INVALID_ARGUMENT', 'header.if-match'],
    ['bad machine id', () => api.get('/v1/machines/not-a-machine'), 400, 'INVALID_ARGUMENT', 'path.machine_id'],
    ['bad id on sleep', () => api.post('/v1/machines/DM-UPPER/sleep'), 400, 'INVALID_ARGUMENT', 'path.machine_id'],
    ['unknown machine', () => api.post('/v1/machines/dm-00000000-0000-7000-8000-000000000000/wake'), 404, 'MACHINE_NOT_FOUND'],
    ['unknown route', () => api.get('/v1/elsewhere'), 404, 'NOT_FOUND'],
    ['wrong method', () => api.request('PUT', `/v1/machines/${machineId}`), 405, 'METHOD_NOT_ALLOWED'],
    ['bad limit', () => api.get('/v1/machines?limit=0'), 400, 'INVALID_ARGUMENT', 'query.limit'],
    ['limit too large', () => api.get('/v1/machines?limit=501'), 400, 'INVALID_ARGUMENT', 'query.limit'],
    ['limit not a number', () => api.get('/v1/machines?limit=ten'), 400, 'INVALID_ARGUMENT', 'query.limit'],
    ['forged cursor', () => api.get('/v1/machines?cursor=bm90LWEtY3Vyc29y'), 400, 'INVALID_ARGUMENT', 'query.cursor'],
  ];
  it.each(cases)('%s', async (_name, send, status, code, detail) => {
    const before = await revision();
    expectError(await send(), status, code, detail);
    expect(await revision()).toBe(before);
  });

  it('REVISION_MISMATCH is retryable with the current revision in details', async () => {
    const current = await revision();
    const res = await api.post(`/v1/machines/${machineId}/sleep`, undefined, { headers: { 'if-match': '"1"' } });
    expect(res.body).toMatchObject({ retryable: true, details: { expected_revision: current, provided_revision: '1' } });
    expect(res.headers.get('x-should-retry')).toBe('false');
  });

  it('INVALID_STATE names the states', async () => {
    const { body } = await api.createMachine();
    await api.waitForPhase(body.machine_id, 'running');
    await api.delete(`/v1/machines/${body.machine_id}`);
    await api.waitForPhase(body.machine_id, 'destroyed');
    const res = await api.post(`/v1/machines/${body.machine_id}/wake`);
    expectError(res, 409, 'INVALID_STATE');
    expect(res.body.details).toEqual({
      current_desired_state: 'destroyed',
      current_observed_state: 'destroyed',
      expected_observed_state: 'sleeping',
      target_desired_state: 'running',
    });
    expect(res.body.retryable).toBe(false);
  });

  it('a matching If-Match (quoted, bare or *) is accepted', async () => {
    const rev = await revision();
    expect((await api.patch(`/v1/machines/${machineId}`, { autosleep: '20m' }, { headers: { 'if-match': `"${rev}"` } })).status).toBe(200);
    const rev2 = await revision();
    expect((await api.patch(`/v1/machines/${machineId}`, { autosleep: '25m' }, { headers: { 'if-match': rev2 } })).status).toBe(200);
    expect((await api.patch(`/v1/machines/${machineId}`, { autosleep: '30m' }, { headers: { 'if-match': '*' } })).status).toBe(200);
  });
});

describe('auth and tenancy', () => {
  it('no key: 401 AUTH_REQUIRED; a wrong key: 401 AUTH_INVALID', async () => {
    expectError(await api.get('/v1/machines', { key: null }), 401, 'AUTH_REQUIRED');
    expectError(await api.get('/v1/machines', { key: 'hk_wrong' }), 401, 'AUTH_INVALID');
  });

  it('x-api-key works; Bearer and x-api-key that differ: 401', async () => {
    expect((await api.get('/v1/machines', { key: null, headers: { 'x-api-key': server.adminKey } })).status).toBe(200);
    expectError(await api.get('/v1/machines', { headers: { 'x-api-key': 'hk_other' } }), 401, 'AUTH_INVALID');
  });

  it('an org header other than the key\'s org: 403 AUTH_ORG_MISMATCH', async () => {
    expect((await api.get('/v1/machines', { headers: { 'x-dedalus-org-id': server.orgId } })).status).toBe(200);
    expectError(await api.get('/v1/machines', { headers: { 'x-dedalus-org-id': '00000000-0000-4000-8000-000000000000' } }), 403, 'AUTH_ORG_MISMATCH');
  });

  it('another org cannot see, change or watch the machine (404), and its list is empty', async () => {
    const other = await createApiKey(server.hangar.store, { orgId: '11111111-1111-4111-8111-111111111111', scope: 'user' });
    const api2 = new Api(server.url, other.key);
    const before = await revision();
    expectError(await api2.get(`/v1/machines/${machineId}`), 404, 'MACHINE_NOT_FOUND');
    expectError(await api2.post(`/v1/machines/${machineId}/sleep`), 404, 'MACHINE_NOT_FOUND');
    expectError(await api2.patch(`/v1/machines/${machineId}`, { vcpu: 2 }), 404, 'MACHINE_NOT_FOUND');
    expectError(await api2.delete(`/v1/machines/${machineId}`), 404, 'MACHINE_NOT_FOUND');
    expectError(await api2.get(`/v1/machines/${machineId}/status/stream`), 404, 'MACHINE_NOT_FOUND');
    expect((await api2.get('/v1/machines')).body.items).toEqual([]);
    expect(await revision()).toBe(before);
    // A user-scoped key cannot read metrics.
    expectError(await api2.get('/metrics'), 403, 'AUTH_SCOPE_FORBIDDEN');
  });

  it('a revoked key stops working', async () => {
    const created = await createApiKey(server.hangar.store, { orgId: server.orgId, scope: 'user' });
    await server.hangar.store.revokeApiKey(created.record.keyId, Date.now());
    // The server caches key lookups briefly (HANGAR_AUTH_CACHE_MS); this key was never looked up.
    expectError(await new Api(server.url, created.key).get('/v1/machines'), 401, 'AUTH_INVALID');
  });
});
