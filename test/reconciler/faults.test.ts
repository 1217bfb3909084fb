/**
 * The reconciler against runtime faults, with the real store and the
 * simulated runtime: failures are recorded (reason, last_error, retryable)
 * and retried with backoff; lost hosts and dead sandboxes are recovered.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Api } from '../helpers/http.js';
import type { TestServer } from '../helpers/server.js';
import { allocationTotals, startTestServer } from '../helpers/server.js';

let server: TestServer | undefined;

/** The reasons a machine went through, from its event log (transient phases included). */
async function reasons(id: string): Promise<string[]> {
  return (await server!.hangar.store.readMachineEvents(id, 0, 10_000)).map((e) => JSON.parse(e.body).status.reason as string);
}
afterEach(async () => {
  await server?.close();
  server = undefined;
});

describe('reconciler and runtime faults', () => {
  it('a retryable start failure is recorded, retried with backoff, and converges', async () => {
    server = await startTestServer();
    const api = new Api(server.url, server.adminKey);
    server.sim!.setFaults({ failureRate: 1, retryable: true, hostLossRate: 0 });
    const id = (await api.createMachine()).body.machine_id as string;
    const failed = await api.waitForPhase(id, 'failed');
    expect(failed.status).toMatchObject({ reason: 'RuntimeStartFailed', retryable: true });
    expect(failed.status.last_error).toContain('injected start failure');
    // Several attempts, spaced by backoff, while failures persist.
    await api.waitFor(id, () => server!.sim!.calls.filter((c) => c.machineId === id && c.op === 'start').length >= 3);
    server.sim!.setFaults({ failureRate: 0, retryable: true, hostLossRate: 0 });
    const running = await api.waitForPhase(id, 'running');
    expect(running.status.last_error).toBeUndefined();
    const starts = server.sim!.calls.filter((c) => c.machineId === id && c.op === 'start').length;
    // At least three failed attempts were made (a fourth may have been in flight, and succeeded).
    expect(starts).toBeGreaterThanOrEqual(3);
    expect((await reasons(id)).filter((r) => r === 'RuntimeStartFailed').length).toBeGreaterThanOrEqual(2);
  });

  it('a non-retryable failure stays failed until the user deletes it', async () => {
    server = await startTestServer();
    const api = new Api(server.url, server.adminKey);
    server.sim!.setFaults({ failureRate: 1, retryable: false, hostLossRate: 0 });
    const id = (await api.createMachine()).body.machine_id as string;
    const failed = await api.waitForPhase(id, 'failed');
    expect(failed.status.retryable).toBe(false);
    const starts = server.sim!.calls.filter((c) => c.op === 'start').length;
    await server.hangar.reconciler.resync(true);
    await new Promise((r) => setTimeout(r, 300));
    expect(server.sim!.calls.filter((c) => c.op === 'start').length).toBe(starts);
    expect((await api.get(`/v1/machines/${id}`)).body.status.phase).toBe('failed');
    server.sim!.setFaults({ failureRate: 0, retryable: true, hostLossRate: 0 });
    await api.delete(`/v1/machines/${id}`);
    await api.waitForPhase(id, 'destroyed');
  });

  it('a lost host: its machines fail with SandboxLost and start again on another host', async () => {
    server = await startTestServer({ env: { SIM_HOSTS: '2x4/8192/100' } });
    const api = new Api(server.url, server.adminKey);
    const id = (await api.createMachine()).body.machine_id as string;
    await api.waitForPhase(id, 'running');
    const first = server.sim!.sandboxState(id)!.hostId;
    const before = (await reasons(id)).length;
    server.sim!.loseHost(first);
    const back = await api.waitFor(id, (m) => m.status.phase === 'running' && Number(m.status.revision) > 4);
    expect((await reasons(id)).slice(before)).toEqual(['SandboxLost', 'Placed', 'Started']);
    expect(back.status.reason).toBe('Started');
    expect(server.sim!.sandboxState(id)!.hostId).not.toBe(first);
  });

  it('a sandbox that dies on its own is reported and restarted', async () => {
    server = await startTestServer();
    const api = new Api(server.url, server.adminKey);
    const id = (await api.createMachine()).body.machine_id as string;
    await api.waitForPhase(id, 'running');
    const before = (await reasons(id)).length;
    server.sim!.killSandbox(id);
    await api.waitFor(id, (m) => m.status.phase === 'running' && Number(m.status.revision) > 4);
    expect((await reasons(id)).slice(before)).toEqual(['SandboxLost', 'Placed', 'Started']);
    expect(server.sim!.sandboxState(id)?.state).toBe('running');
  });

  it('injected faults at a rate: every machine still converges', async () => {
    server = await startTestServer({ env: { SIM_FAILURE_RATE: '0.3' } });
    const api = new Api(server.url, server.adminKey);
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) ids.push((await api.createMachine()).body.machine_id);
    for (const id of ids) await api.waitForPhase(id, 'running', 20_000);
    for (const id of ids) await api.post(`/v1/machines/${id}/sleep`);
    for (const id of ids) await api.waitForPhase(id, 'sleeping', 20_000);
    for (const id of ids) await api.delete(`/v1/machines/${id}`);
    for (const id of ids) await api.waitForPhase(id, 'destroyed', 20_000);
    for (const id of ids) expect(server.sim!.sandboxState(id)).toBeUndefined();
    const totals = await allocationTotals(server);
    expect(totals.stored).toEqual(totals.derived);
  });
});
