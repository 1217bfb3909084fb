/**
 * Every response of the eight lifecycle operations, success and error, has
 * exactly the reference's shape (additionalProperties: false everywhere).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as S from '../../src/api/schemas.js';
import { Api } from '../helpers/http.js';
import { assertMatchesReference, referenceSchema } from '../helpers/reference-schemas.js';
import type { TestServer } from '../helpers/server.js';
import { startTestServer } from '../helpers/server.js';
import { openStream, statusFrames } from '../helpers/sse.js';

let server: TestServer;
let api: Api;

beforeAll(async () => {
  server = await startTestServer();
  api = new Api(server.url, server.adminKey);
});
afterAll(() => server.close());

/** JSON Schema as data, without TypeBox's symbols and annotations, keys sorted. */
function shape(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(shape);
  if (schema === null || typeof schema !== 'object') return schema;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(schema).sort()) {
    if (key !== 'description') out[key] = shape((schema as Record<string, unknown>)[key]);
  }
  // TypeBox writes enums as anyOf of consts; the reference as `enum`.
  if (Array.isArray(out['anyOf']) && (out['anyOf'] as { const?: unknown }[]).every((s) => s && typeof s === 'object' && 'const' in s)) {
    return { enum: (out['anyOf'] as { const: unknown }[]).map((s) => s.const), type: 'string' };
  }
  return out;
}

function deref(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(deref);
  if (schema === null || typeof schema !== 'object') return schema;
  const ref = (schema as { $ref?: string }).$ref;
  if (ref !== undefined) return deref(referenceSchema(ref.replace('#/$defs/', '')));
  return Object.fromEntries(Object.entries(schema).map(([k, v]) => [k, deref(v)]));
}

describe('the project schemas are the reference schemas', () => {
  it.each([
    ['LifecycleResponse', S.LifecycleResponse],
    ['MachineListResponse', S.MachineListResponse],
    ['CreateMachineRequest', S.CreateMachineRequest],
    ['UpdateMachineRequest', S.UpdateMachineRequest],
    ['ErrorEnvelope', S.ErrorEnvelope],
  ])('%s', (name, ours) => {
    expect(shape(JSON.parse(JSON.stringify(ours)))).toEqual(shape(deref(referenceSchema(name))));
  });
});

describe('responses of the eight operations match the reference', () => {
  it('create, get, list, patch, sleep, wake, delete and the stream', async () => {
    const created = await api.createMachine({ vcpu: 1, memory_mib: 512, storage_gib: 5, autosleep: '15m' });
    expect(created.status).toBe(202);
    assertMatchesReference('LifecycleResponse', created.body);
    const id = created.body.machine_id as string;

    const got = await api.get(`/v1/machines/${id}`);
    assertMatchesReference('LifecycleResponse', got.body);

    const list = await api.get('/v1/machines?limit=1');
    assertMatchesReference('MachineListResponse', list.body);
    expect(list.body.items).toHaveLength(1);

    await api.waitForPhase(id, 'running');
    const patched = await api.patch(`/v1/machines/${id}`, { vcpu: 2 });
    assertMatchesReference('LifecycleResponse', patched.body);
    await api.waitFor(id, (m) => m.status.reason === 'Resized');

    const slept = await api.post(`/v1/machines/${id}/sleep`);
    assertMatchesReference('LifecycleResponse', slept.body);
    await api.waitForPhase(id, 'sleeping');
    const woke = await api.post(`/v1/machines/${id}/wake`);
    assertMatchesReference('LifecycleResponse', woke.body);
    await api.waitForPhase(id, 'running');

    const stream = await openStream(`${server.url}/v1/machines/${id}/status/stream`, server.adminKey, { 'last-event-id': '0' });
    await stream.ended;
    const frames = statusFrames(stream.frames);
    expect(frames.length).toBeGreaterThan(5);
    for (const f of frames) assertMatchesReference('LifecycleResponse', f.body);

    const deleted = await api.delete(`/v1/machines/${id}`);
    assertMatchesReference('LifecycleResponse', deleted.body);
    const gone = await api.waitForPhase(id, 'destroyed');
    assertMatchesReference('LifecycleResponse', gone);
  });

  it('a failed machine carries last_error and still matches', async () => {
    server.sim!.setFaults({ failureRate: 1, retryable: false, hostLossRate: 0 });
    try {
      const { body } = await api.createMachine();
      const failed = await api.waitForPhase(body.machine_id, 'failed');
      expect(failed.status.last_error).toMatch(/injected start failure/);
      expect(failed.status.retryable).toBe(false);
      assertMatchesReference('LifecycleResponse', failed);
    } finally {
      server.sim!.setFaults({ failureRate: 0, retryable: true, hostLossRate: 0 });
    }
  });

  it('error responses of every operation are the envelope', async () => {
    const missing = 'dm-00000000-0000-7000-8000-000000000000';
    const responses = await Promise.all([
      api.get('/v1/machines', { key: null }),
      api.post('/v1/machines', { vcpu: 'x' }),
      api.get(`/v1/machines/${missing}`),
      api.patch(`/v1/machines/${missing}`, { vcpu: 1 }),
      api.delete(`/v1/machines/${missing}`),
      api.post(`/v1/machines/${missing}/sleep`),
      api.post(`/v1/machines/${missing}/wake`),
      api.get(`/v1/machines/${missing}/status/stream`),
      api.get('/v1/nothing-here'),
    ]);
    expect(responses.map((r) => r.status)).toEqual([401, 400, 404, 404, 404, 404, 404, 404, 404]);
    for (const r of responses) {
      assertMatchesReference('ErrorEnvelope', r.body);
      expect(r.headers.get('x-should-retry')).toBe('false');
    }
  });

  it('/openapi.json is OpenAPI 3.1 with the lifecycle operations and no key needed', async () => {
    const res = await api.get('/openapi.json', { key: null });
    expect(res.status).toBe(200);
    expect(res.body.openapi).toBe('3.1.0');
    const ops = Object.values(res.body.paths as Record<string, Record<string, { operationId?: string }>>).flatMap((p) =>
      Object.values(p).map((o) => o.operationId),
    );
    for (const op of ['listMachines', 'createMachine', 'getMachine', 'patchMachine', 'deleteMachine', 'sleepMachine', 'wakeMachine', 'watchMachineStatus']) {
      expect(ops).toContain(op);
    }
  });

  it('/healthz needs no key; /metrics needs an admin key', async () => {
    expect((await api.get('/healthz', { key: null })).status).toBe(200);
    expect((await api.get('/metrics', { key: null })).status).toBe(401);
    const metrics = await api.get('/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.text).toContain('hangar_http_request_duration_seconds');
  });
});
