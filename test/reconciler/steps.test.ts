/**
 * The reconciler's steps as a machine's history shows them: every phase of a
 * create, sleep and wake is its own commit (revision and event), in order,
 * and a machine whose activity is recorded while a step is under way (an
 * execution, a no-op request) still converges at once, without waiting for
 * the periodic resync.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Api } from '../helpers/http.js';
import type { TestServer } from '../helpers/server.js';
import { startTestServer } from '../helpers/server.js';

let server: TestServer | undefined;

afterEach(async () => {
  await server?.close();
  server = undefined;
});

async function phases(id: string): Promise<{ revision: number; phase: string }[]> {
  return (await server!.hangar.store.readMachineEvents(id, 0, 1_000)).map((e) => ({ revision: e.revision, phase: e.phase }));
}

describe('reconciler steps', () => {
  it('every phase of create, sleep and wake is its own revision and event, in order', async () => {
    server = await startTestServer({ env: { RESYNC_INTERVAL: '1h' } });
    const api = new Api(server.url, server.adminKey);
    const id = (await api.createMachine()).body.machine_id as string;
    await api.waitForPhase(id, 'running');
    await api.post(`/v1/machines/${id}/sleep`);
    await api.waitForPhase(id, 'sleeping');
    await api.post(`/v1/machines/${id}/wake`);
    await api.waitForPhase(id, 'running');
    const history = await phases(id);
    expect(history.map((h) => h.phase)).toEqual([
      'accepted',
      'placement_pending',
      'starting',
      'running',
      'running', // sleep requested
      'stopping',
      'sleeping',
      'sleeping', // wake requested
      'starting',
      'running',
    ]);
    const revisions = history.map((h) => h.revision);
    expect(revisions).toEqual([...revisions].sort((a, b) => a - b));
    expect(new Set(revisions).size).toBe(revisions.length);
  });

  it('activity recorded while a machine starts does not hold it back', async () => {
    // A slow runtime, and no resync within the test: only the reconciler's own second look can finish it.
    server = await startTestServer({ env: { SIM_LATENCY_MS: '300', RESYNC_INTERVAL: '1h' } });
    const api = new Api(server.url, server.adminKey);
    const id = (await api.createMachine()).body.machine_id as string;
    await api.waitForPhase(id, 'starting');
    // While the runtime starts it: the commit of `running` was planned from the activity before this.
    await server.hangar.store.touchActivity(id, Date.now() + 1);
    const started = performance.now();
    const running = await api.waitForPhase(id, 'running');
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(running.status.reason).toBe('Started');
  });
});
