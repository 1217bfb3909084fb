/**
 * The database goes away under the server (every connection terminated, as
 * in a PostgreSQL restart): requests get 503 or succeed, never 500; streams
 * end with an error frame or carry on, and a resume loses nothing; machines
 * still converge and no committed state is lost.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { pgQuery } from '../helpers/pg.js';
import { Api } from '../helpers/http.js';
import type { TestServer } from '../helpers/server.js';
import { startTestServer } from '../helpers/server.js';
import { openStream, statusFrames } from '../helpers/sse.js';

let server: TestServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

async function terminateConnections(url: string): Promise<number> {
  const admin = new URL(url);
  const name = admin.pathname.slice(1);
  admin.pathname = '/postgres';
  const rows = await pgQuery(admin.toString(), 'select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()', [name]);
  return rows.length;
}

describe('a restarted database', () => {
  it('loses no committed state and no stream event', async () => {
    server = await startTestServer({ env: { SIM_LATENCY_MS: '150' } });
    const api = new Api(server.url, server.adminKey);
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push((await api.createMachine()).body.machine_id);
    const stream = await openStream(`${server.url}/v1/machines/${ids[0]}/status/stream`, server.adminKey, { 'last-event-id': '0' });
    await stream.waitFor((f) => f.length >= 1);

    expect(await terminateConnections(server.databaseUrl!)).toBeGreaterThan(0);
    const statuses: number[] = [];
    for (let i = 0; i < 20; i++) statuses.push((await api.get(`/v1/machines/${ids[1]}`)).status);
    expect(statuses.every((s) => s === 200 || s === 503)).toBe(true);

    for (const id of ids) await api.waitForPhase(id, 'running', 20_000);
    await stream.ended;
    const first = statusFrames(stream.frames);
    const ended = stream.frames.at(-1)!;
    let all = first.map((f) => f.revision);
    if (ended.event === 'error') {
      expect(JSON.parse(ended.data)).toMatchObject({ error_code: 'DEPENDENCY_UNAVAILABLE', retryable: true });
      const resumed = await openStream(`${server.url}/v1/machines/${ids[0]}/status/stream`, server.adminKey, { 'last-event-id': String(all.at(-1) ?? 0) });
      await resumed.ended;
      all = all.concat(statusFrames(resumed.frames).map((f) => f.revision));
    }
    const log = (await server.hangar.store.readMachineEvents(ids[0]!, 0, 1000)).map((e) => e.revision);
    expect(all).toEqual(log);
    expect((await server.hangar.store.readMachineEvents(ids[0]!, 0, 1000)).map((e) => e.phase).at(-1)).toBe('running');
  });
});
