/** Placement by capacity: a machine that does not fit waits (NoReadyHosts) and runs when capacity frees. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api } from '../helpers/http.js';
import type { TestServer } from '../helpers/server.js';
import { allocationTotals, startTestServer } from '../helpers/server.js';

let server: TestServer;
let api: Api;

beforeAll(async () => {
  server = await startTestServer({ env: { SIM_HOSTS: '1x2/2048/20' } });
  api = new Api(server.url, server.adminKey);
});
afterAll(() => server.close());

describe('placement on one small host', () => {
  it('waits in placement_pending/NoReadyHosts and runs once another machine is deleted', async () => {
    const a = (await api.createMachine({ vcpu: 1.5, memory_mib: 1024, storage_gib: 10 })).body.machine_id;
    await api.waitForPhase(a, 'running');
    const b = (await api.createMachine({ vcpu: 1, memory_mib: 1024, storage_gib: 10 })).body.machine_id;
    const waiting = await api.waitFor(b, (m) => m.status.reason === 'NoReadyHosts');
    expect(waiting.status.phase).toBe('placement_pending');
    // It stays there: nothing fits until something frees.
    await new Promise((r) => setTimeout(r, 300));
    expect((await api.get(`/v1/machines/${b}`)).body.status.phase).toBe('placement_pending');

    await api.delete(`/v1/machines/${a}`);
    await api.waitForPhase(a, 'destroyed');
    const running = await api.waitForPhase(b, 'running');
    expect(running.status.reason).toBe('Started');
    await api.delete(`/v1/machines/${b}`);
    await api.waitForPhase(b, 'destroyed');
  });

  it('a sleeping machine frees CPU and memory but keeps its storage', async () => {
    const a = (await api.createMachine({ vcpu: 2, memory_mib: 2048, storage_gib: 15 })).body.machine_id;
    await api.waitForPhase(a, 'running');
    await api.post(`/v1/machines/${a}/sleep`);
    await api.waitForPhase(a, 'sleeping');
    // Fits CPU and memory now, but not storage (15 of 20 GiB are held).
    const big = (await api.createMachine({ vcpu: 2, memory_mib: 2048, storage_gib: 10 })).body.machine_id;
    await api.waitFor(big, (m) => m.status.reason === 'NoReadyHosts');
    const small = (await api.createMachine({ vcpu: 2, memory_mib: 2048, storage_gib: 5 })).body.machine_id;
    await api.waitForPhase(small, 'running');
    // Now `a` cannot wake: its host has no CPU left. It waits too.
    await api.post(`/v1/machines/${a}/wake`);
    await api.waitFor(a, (m) => m.status.reason === 'NoReadyHosts');
    await api.delete(`/v1/machines/${small}`);
    await api.waitForPhase(a, 'running');
    for (const id of [a, big]) await api.delete(`/v1/machines/${id}`);
  });

  it('a waiting machine runs once a running one shrinks to make room', async () => {
    const a = (await api.createMachine({ vcpu: 2, memory_mib: 1024, storage_gib: 5 })).body.machine_id;
    await api.waitForPhase(a, 'running');
    const b = (await api.createMachine({ vcpu: 1, memory_mib: 512, storage_gib: 5 })).body.machine_id;
    await api.waitFor(b, (m) => m.status.reason === 'NoReadyHosts');
    expect((await api.patch(`/v1/machines/${a}`, { vcpu: 1 })).status).toBe(202);
    const running = await api.waitForPhase(b, 'running');
    expect(running.status.reason).toBe('Started');
    for (const id of [a, b]) await api.delete(`/v1/machines/${id}`);
    for (const id of [a, b]) await api.waitForPhase(id, 'destroyed');
  });

  it('a waiting machine made smaller runs once it fits; changing its autosleep alone does not move it', async () => {
    const a = (await api.createMachine({ vcpu: 1.5, memory_mib: 1024, storage_gib: 5 })).body.machine_id;
    await api.waitForPhase(a, 'running');
    const b = (await api.createMachine({ vcpu: 1, memory_mib: 512, storage_gib: 5 })).body.machine_id;
    await api.waitFor(b, (m) => m.status.reason === 'NoReadyHosts');
    expect((await api.patch(`/v1/machines/${b}`, { autosleep: '10m' })).status).toBe(202);
    await new Promise((r) => setTimeout(r, 300));
    expect((await api.get(`/v1/machines/${b}`)).body.status.phase).toBe('placement_pending');
    expect((await api.patch(`/v1/machines/${b}`, { vcpu: 0.5 })).status).toBe(202);
    expect((await api.waitForPhase(b, 'running')).vcpu).toBe(0.5);
    for (const id of [a, b]) await api.delete(`/v1/machines/${id}`);
    for (const id of [a, b]) await api.waitForPhase(id, 'destroyed');
  });

  it('a resize beyond what the host has left is 409 CAPACITY_EXCEEDED and changes nothing', async () => {
    const a = (await api.createMachine({ vcpu: 1, memory_mib: 1024, storage_gib: 5 })).body.machine_id;
    const m = await api.waitForPhase(a, 'running');
    const res = await api.patch(`/v1/machines/${a}`, { vcpu: 4 });
    expect(res.status).toBe(409);
    expect(res.body.error_code).toBe('CAPACITY_EXCEEDED');
    expect((await api.get(`/v1/machines/${a}`)).body.status.revision).toBe(m.status.revision);
    const ok = await api.patch(`/v1/machines/${a}`, { vcpu: 2 });
    expect(ok.status).toBe(202);
    await api.waitFor(a, (x) => x.status.reason === 'Resized');
    await api.delete(`/v1/machines/${a}`);
  });

  it('each host\'s allocation totals equal the sum over its machines after all of the above', async () => {
    const totals = await allocationTotals(server);
    expect(totals.stored).toEqual(totals.derived);
  });
});
