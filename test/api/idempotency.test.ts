/** Idempotency-Key: replay, reuse with another request, in-flight duplicates, per-org scope. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey } from '../../src/api/api-keys.js';
import { Api } from '../helpers/http.js';
import type { TestServer } from '../helpers/server.js';
import { startTestServer } from '../helpers/server.js';

let server: TestServer;
let api: Api;

beforeAll(async () => {
  server = await startTestServer();
  api = new Api(server.url, server.adminKey);
});
afterAll(() => server.close());

const body = { vcpu: 1, memory_mib: 512, storage_gib: 5 };

describe('Idempotency-Key', () => {
  it('a repeated create replays the first response and creates one machine', async () => {
    const headers = { 'idempotency-key': 'create-1' };
    const first = await api.post('/v1/machines', body, { headers });
    const second = await api.post('/v1/machines', { storage_gib: 5, memory_mib: 512, vcpu: 1 }, { headers });
    expect(second.status).toBe(first.status);
    expect(second.text).toBe(first.text);
    expect(second.headers.get('etag')).toBe(first.headers.get('etag'));
    const all = (await api.get('/v1/machines?limit=500')).body.items.filter((m: any) => m.machine_id === first.body.machine_id);
    expect(all).toHaveLength(1);
    expect((await api.get('/v1/machines?limit=500')).body.items).toHaveLength(1);
  });

  it('the same key with another body: 409 IDEMPOTENCY_KEY_REUSED with both hashes', async () => {
    const headers = { 'idempotency-key': 'create-2' };
    await api.post('/v1/machines', body, { headers });
    const res = await api.post('/v1/machines', { ...body, vcpu: 2 }, { headers });
    expect(res.status).toBe(409);
    expect(res.body.error_code).toBe('IDEMPOTENCY_KEY_REUSED');
    expect(res.body.retryable).toBe(false);
    expect(res.body.details.expected_request_hash).toMatch(/^[0-9a-f]{8}$/);
    expect(res.body.details.provided_request_hash).not.toBe(res.body.details.expected_request_hash);
    expect(res.headers.get('x-should-retry')).toBe('false');
  });

  it('the same key on another path is another request', async () => {
    const { body: m } = await api.createMachine();
    await api.waitForPhase(m.machine_id, 'running');
    const headers = { 'idempotency-key': 'action-1' };
    const sleep = await api.post(`/v1/machines/${m.machine_id}/sleep`, undefined, { headers });
    expect(sleep.status).toBe(202);
    const wake = await api.post(`/v1/machines/${m.machine_id}/wake`, undefined, { headers });
    expect(wake.body.error_code).toBe('IDEMPOTENCY_KEY_REUSED');
    // The replayed sleep does not act again, even after the machine moved on.
    await api.waitForPhase(m.machine_id, 'sleeping');
    const replay = await api.post(`/v1/machines/${m.machine_id}/sleep`, undefined, { headers });
    expect(replay.status).toBe(202);
    expect(replay.body.status.revision).toBe(sleep.body.status.revision);
  });

  it('a 4xx is replayed; a REVISION_MISMATCH is not stored', async () => {
    const { body: m } = await api.createMachine();
    await api.waitForPhase(m.machine_id, 'running'); // no reconciler commits race the If-Match below
    const notFound = await api.post('/v1/machines/dm-00000000-0000-7000-8000-000000000000/sleep', undefined, { headers: { 'idempotency-key': 'nf' } });
    expect(notFound.status).toBe(404);
    const again = await api.post('/v1/machines/dm-00000000-0000-7000-8000-000000000000/sleep', undefined, { headers: { 'idempotency-key': 'nf' } });
    expect(again.status).toBe(404);

    const headers = { 'idempotency-key': 'stale', 'if-match': '"1"' };
    const stale = await api.delete(`/v1/machines/${m.machine_id}`, { headers });
    expect(stale.body.error_code).toBe('REVISION_MISMATCH');
    // Not stored: the retry with the same key acts anew (and with a good If-Match succeeds).
    const rev = (await api.get(`/v1/machines/${m.machine_id}`)).body.status.revision;
    const retry = await api.delete(`/v1/machines/${m.machine_id}`, { headers: { 'idempotency-key': 'stale', 'if-match': `"${rev}"` } });
    expect([200, 202]).toContain(retry.status);
  });

  it('a duplicate while the first is in flight: 429 RATE_LIMITED, retry_after_ms 250', async () => {
    const store = server.hangar.store;
    // The first request holds the key (as a request still being handled would).
    await store.claimIdempotencyKey(server.orgId, 'busy', 'f'.repeat(64), Date.now(), 60_000);
    const res = await api.post('/v1/machines', body, { headers: { 'idempotency-key': 'busy' } });
    // The stored hash differs from this request's, so mismatch wins; use the real hash to see in-flight.
    expect(res.body.error_code).toBe('IDEMPOTENCY_KEY_REUSED');
    const { requestHash } = await import('../../src/api/idempotency.js');
    await store.claimIdempotencyKey(server.orgId, 'busy2', requestHash('POST', '/v1/machines', body), Date.now(), 60_000);
    const inFlight = await api.post('/v1/machines', body, { headers: { 'idempotency-key': 'busy2' } });
    expect(inFlight.status).toBe(429);
    expect(inFlight.body).toMatchObject({ error_code: 'RATE_LIMITED', retryable: true, retry_after_ms: 250 });
    expect(inFlight.headers.get('retry-after-ms')).toBe('250');
  });

  it('keys are scoped per org', async () => {
    const other = await createApiKey(server.hangar.store, { orgId: '22222222-2222-4222-8222-222222222222', scope: 'user' });
    const api2 = new Api(server.url, other.key);
    const a = await api.post('/v1/machines', body, { headers: { 'idempotency-key': 'shared' } });
    const b = await api2.post('/v1/machines', body, { headers: { 'idempotency-key': 'shared' } });
    expect(a.status).toBe(202);
    expect(b.status).toBe(202);
    expect(a.body.machine_id).not.toBe(b.body.machine_id);
  });
});

describe('pagination', () => {
  it('walks every machine once with opaque cursors; next_cursor absent on the last page', async () => {
    const org = await createApiKey(server.hangar.store, { orgId: '33333333-3333-4333-8333-333333333333', scope: 'user' });
    const api3 = new Api(server.url, org.key);
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push((await api3.createMachine()).body.machine_id);
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const res = await api3.get(`/v1/machines?limit=3${cursor ? `&cursor=${cursor}` : ''}`);
      expect(res.status).toBe(200);
      seen.push(...res.body.items.map((m: any) => m.machine_id));
      cursor = res.body.next_cursor;
      pages++;
    } while (cursor !== undefined);
    expect(pages).toBe(3);
    expect(seen).toEqual(ids);
    const all = await api3.get('/v1/machines');
    expect(all.body.items).toHaveLength(7);
    expect('next_cursor' in all.body).toBe(false);
  });
});
