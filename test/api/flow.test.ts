/**
 * The whole lifecycle over real HTTP: create -> running -> resize -> sleep ->
 * wake -> delete -> destroyed, with revisions that only go up and ETags that
 * are the revision.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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

describe('machine lifecycle over HTTP', () => {
  it('converges through every phase, revisions strictly increasing, ETag = revision', async () => {
    const revisions: number[] = [];
    const track = (res: { headers: Headers; body: any }) => {
      expect(res.headers.get('etag')).toBe(`"${res.body.status.revision}"`);
      revisions.push(Number(res.body.status.revision));
    };

    const created = await api.createMachine({ vcpu: 0.5, memory_mib: 512, storage_gib: 4 });
    expect(created.status).toBe(202);
    expect(created.body.desired_state).toBe('running');
    expect(created.body.status.phase).toBe('accepted');
    expect(created.body.machine_id).toMatch(/^dm-[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    track(created);
    const id = created.body.machine_id as string;

    const running = await api.waitForPhase(id, 'running');
    expect(running.status.reason).toBe('Started');
    const got = await api.get(`/v1/machines/${id}`);
    track(got);

    const resized = await api.patch(`/v1/machines/${id}`, { vcpu: 1.5, memory_mib: 1024, storage_gib: 8 });
    expect([200, 202]).toContain(resized.status);
    expect(resized.body).toMatchObject({ vcpu: 1.5, memory_mib: 1024, storage_gib: 8, desired_state: 'running' });
    expect(resized.body.status.phase).toBe('running');
    track(resized);
    const applied = await api.waitFor(id, (m) => m.status.reason === 'Resized');
    expect(applied.status.phase).toBe('running');
    expect(server.sim!.sandboxState(id)?.sizes).toEqual({ vcpu: 1.5, memoryMib: 1024, storageGib: 8 });
    track(await api.get(`/v1/machines/${id}`));

    const sleep = await api.post(`/v1/machines/${id}/sleep`);
    expect(sleep.status).toBe(202);
    expect(sleep.body.desired_state).toBe('sleeping');
    track(sleep);
    await api.waitForPhase(id, 'sleeping');
    expect(server.sim!.sandboxState(id)?.state).toBe('sleeping');
    const again = await api.post(`/v1/machines/${id}/sleep`);
    expect(again.status).toBe(200);
    track(again);

    const wake = await api.post(`/v1/machines/${id}/wake`);
    expect(wake.status).toBe(202);
    track(wake);
    await api.waitForPhase(id, 'running');
    expect(server.sim!.sandboxState(id)?.state).toBe('running');
    const wakeAgain = await api.post(`/v1/machines/${id}/wake`);
    expect(wakeAgain.status).toBe(200);
    track(wakeAgain);

    const del = await api.delete(`/v1/machines/${id}`);
    expect(del.status).toBe(202);
    expect(del.body.desired_state).toBe('destroyed');
    track(del);
    const destroyed = await api.waitForPhase(id, 'destroyed');
    expect(destroyed.status.reason).toBe('Destroyed');
    expect(server.sim!.sandboxState(id)).toBeUndefined();
    const delAgain = await api.delete(`/v1/machines/${id}`);
    expect(delAgain.status).toBe(200);
    track(delAgain);

    for (let i = 1; i < revisions.length; i++) expect(revisions[i]).toBeGreaterThanOrEqual(revisions[i - 1]!);
    // Each mutation that changed something moved the revision.
    expect(new Set(revisions).size).toBeGreaterThanOrEqual(7);
    // Still readable after destroy, and listed.
    expect((await api.get(`/v1/machines/${id}`)).status).toBe(200);
  });

  it('wake of a machine with a pending sleep calls the sleep off', async () => {
    server.sim!.setFaults({ failureRate: 0, retryable: true, hostLossRate: 0 });
    const { body } = await api.createMachine();
    const id = body.machine_id as string;
    await api.waitForPhase(id, 'running');
    await server.hangar.reconciler.stop(); // freeze the reconciler so the sleep stays pending
    try {
      const sleep = await api.post(`/v1/machines/${id}/sleep`);
      expect(sleep.body).toMatchObject({ desired_state: 'sleeping', status: { phase: 'running' } });
      const wake = await api.post(`/v1/machines/${id}/wake`);
      expect(wake.status).toBe(200);
      expect(wake.body).toMatchObject({ desired_state: 'running', status: { phase: 'running' } });
    } finally {
      await server.hangar.reconciler.start();
    }
  });

  it('autosleep puts an idle machine to sleep with reason Autosleep', async () => {
    const { body } = await api.createMachine({ vcpu: 1, memory_mib: 512, storage_gib: 5, autosleep: '1s' });
    expect(body.autosleep_seconds).toBe(1);
    const slept = await api.waitFor(body.machine_id, (m) => m.status.phase === 'sleeping', 10_000);
    expect(slept.desired_state).toBe('sleeping');
    const events = await server.hangar.store.readMachineEvents(body.machine_id, 0, 100);
    expect(events.map((e) => JSON.parse(e.body).status.reason)).toContain('Autosleep');
  });

  it('autosleep "never" keeps a machine running and reports 0', async () => {
    const { body } = await api.createMachine({ vcpu: 1, memory_mib: 512, storage_gib: 5, autosleep: 'never' });
    expect(body.autosleep_seconds).toBe(0);
    const patched = await api.patch(`/v1/machines/${body.machine_id}`, { autosleep: '7d3h4s' });
    expect(patched.body.autosleep_seconds).toBe(7 * 86400 + 3 * 3600 + 4);
  });

  it('a mutation answers with the machine as committed: the body a GET returns at that revision', async () => {
    const { body } = await api.createMachine({ vcpu: 0.5, memory_mib: 512, storage_gib: 4, autosleep: '1h' });
    await api.waitForPhase(body.machine_id, 'running');
    const patched = await api.patch(`/v1/machines/${body.machine_id}`, { autosleep: '2h' });
    expect(patched.status).toBe(200);
    expect(patched.headers.get('content-type')).toMatch(/^application\/json/);
    // Running and converged: nothing moves it before the GET.
    const got = await api.get(`/v1/machines/${body.machine_id}`);
    expect(got.headers.get('etag')).toBe(patched.headers.get('etag'));
    expect(patched.body).toEqual(got.body);
    expect(patched.body.autosleep_seconds).toBe(7200);
  });

  it('the default autosleep is 300 seconds', async () => {
    const { body } = await api.createMachine();
    expect(body.autosleep_seconds).toBe(300);
  });
});
