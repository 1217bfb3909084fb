/**
 * Several replicas on one PostgreSQL: real `hangar serve` processes sharing a
 * fresh database. Streams follow every replica, a dead replica's machines are
 * taken over, and resuming on another replica loses nothing.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Api } from '../helpers/http.js';
import { tempDir } from '../helpers/server.js';
import type { ChildServer } from '../helpers/child-server.js';
import { adminKeyOf, freePort, startChildServer } from '../helpers/child-server.js';
import { openStream, statusFrames } from '../helpers/sse.js';
import type { TestDatabase } from '../helpers/store-target.js';
import { createTestDatabase } from '../helpers/store-target.js';
import { pgQuery } from '../helpers/pg.js';
import { rmSync } from 'node:fs';

let db: TestDatabase;
let dataDir: string;
const children: ChildServer[] = [];

beforeEach(async () => {
  db = (await createTestDatabase())!;
  dataDir = tempDir();
});
afterEach(async () => {
  for (const c of children.splice(0)) await c.kill('SIGKILL');
  await db.drop();
  rmSync(dataDir, { recursive: true, force: true });
});

async function replica(name: string, env: Record<string, string> = {}): Promise<ChildServer> {
  const child = await startChildServer(dataDir, {
    HANGAR_DATABASE_URL: db.url,
    HANGAR_REPLICA_ID: name,
    HANGAR_LEASE_TTL_MS: '1000',
    HANGAR_RESYNC_INTERVAL: '1s',
    HANGAR_SIM_LATENCY_MS: '20',
    ...env,
  });
  children.push(child);
  return child;
}

async function eventRevisions(machineId: string): Promise<number[]> {
  const rows = await pgQuery<{ revision: string }>(db.url, 'select revision from events where machine_id = $1 order by revision', [machineId]);
  return rows.map((r) => Number(r.revision));
}

describe('replicas on one PostgreSQL', () => {
  it('start together on a fresh database: one migration, one admin key', async () => {
    const [a, b] = await Promise.all([replica('a'), replica('b')]);
    const key = adminKeyOf(dataDir);
    for (const r of [a, b]) expect((await new Api(r.url, key).get('/v1/machines')).status).toBe(200);
    const [row] = await pgQuery<{ n: string }>(db.url, 'select count(*) as n from api_keys');
    expect(Number(row?.n)).toBe(1);
  });

  it('a watcher on B sees every transition driven by A, in order', async () => {
    const a = await replica('a');
    const b = await replica('b');
    const key = adminKeyOf(dataDir);
    const created = await new Api(a.url, key).createMachine();
    const id = created.body.machine_id as string;
    const stream = await openStream(`${b.url}/v1/machines/${id}/status/stream`, key, { 'last-event-id': '0' });
    await stream.ended;
    const frames = statusFrames(stream.frames);
    expect(frames.map((f) => f.body.status.phase)).toEqual(['accepted', 'placement_pending', 'starting', 'running']);
    expect(frames.map((f) => f.revision)).toEqual(await eventRevisions(id));
    // A drove it: it holds the lease.
    const [row] = await pgQuery<{ owner: string }>(db.url, 'select owner from machines where machine_id = $1', [id]);
    expect(row!.owner).toBe('a');
  });

  it('SIGKILL of the replica driving a machine mid-transition: the other finishes the job', async () => {
    const a = await replica('a', { HANGAR_SIM_LATENCY_MS: '1500' });
    const b = await replica('b');
    const key = adminKeyOf(dataDir);
    const api = new Api(a.url, key);
    const id = (await api.createMachine()).body.machine_id as string;
    await api.waitFor(id, (m) => m.status.phase === 'starting', 10_000);
    await a.kill('SIGKILL');
    const running = await new Api(b.url, key).waitForPhase(id, 'running', 15_000);
    expect(running.status.reason).toBe('Started');
    const revs = await eventRevisions(id);
    expect(new Set(revs).size).toBe(revs.length);
  });

  it('a watcher that reconnects to the other replica with its last id loses nothing', async () => {
    const a = await replica('a', { HANGAR_SIM_LATENCY_MS: '300' });
    const b = await replica('b');
    const key = adminKeyOf(dataDir);
    const id = (await new Api(a.url, key).createMachine()).body.machine_id as string;
    const first = await openStream(`${a.url}/v1/machines/${id}/status/stream`, key, { 'last-event-id': '0' });
    await first.waitFor((f) => f.length >= 2);
    first.close();
    const last = statusFrames(first.frames).at(-1)!.revision;
    const second = await openStream(`${b.url}/v1/machines/${id}/status/stream`, key, { 'last-event-id': String(last) });
    await second.ended;
    const union = [...statusFrames(first.frames), ...statusFrames(second.frames)].map((f) => f.revision);
    expect(union).toEqual(await eventRevisions(id));
    expect(statusFrames(second.frames).at(-1)!.body.status.phase).toBe('running');
  });

  it('when B\'s notification connection drops, it listens again and its watchers see no gap', async () => {
    const a = await replica('a', { HANGAR_SIM_LATENCY_MS: '200' });
    const b = await replica('b');
    const key = adminKeyOf(dataDir);
    const id = (await new Api(a.url, key).createMachine({ vcpu: 1, memory_mib: 512, storage_gib: 5, autosleep: 'never' })).body.machine_id as string;
    const stream = await openStream(`${b.url}/v1/machines/${id}/status/stream`, key, { 'last-event-id': '0' });
    await stream.waitFor((f) => f.length >= 1);
    // Cut every LISTEN connection (both replicas'): notifications sent meanwhile are lost.
    await pgQuery(db.url, "select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and query ilike 'listen%'");
    await stream.ended;
    expect(statusFrames(stream.frames).map((f) => f.revision)).toEqual(await eventRevisions(id));
    expect(statusFrames(stream.frames).at(-1)!.body.status.phase).toBe('running');
  });

  it('a retry that lands on another replica replays the first response', async () => {
    const a = await replica('a');
    const b = await replica('b');
    const key = adminKeyOf(dataDir);
    const body = { vcpu: 1, memory_mib: 512, storage_gib: 5 };
    const first = await new Api(a.url, key).post('/v1/machines', body, { headers: { 'idempotency-key': 'across' } });
    const retry = await new Api(b.url, key).post('/v1/machines', body, { headers: { 'idempotency-key': 'across' } });
    expect(retry.status).toBe(first.status);
    expect(retry.text).toBe(first.text);
    expect((await new Api(b.url, key).get('/v1/machines')).body.items).toHaveLength(1);
  });

  it('hangar serve --replicas 2 serves on one port with two replicas', async () => {
    const port = await freePort();
    const cluster = await startChildServer(dataDir, { HANGAR_DATABASE_URL: db.url, HANGAR_REPLICAS: '2', HANGAR_SIM_LATENCY_MS: '5' }, port);
    children.push(cluster);
    const api = new Api(cluster.url, adminKeyOf(dataDir));
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push((await api.createMachine()).body.machine_id);
    for (const id of ids) await api.waitForPhase(id, 'running');
    const owners = await pgQuery<{ owner: string }>(db.url, 'select distinct owner from machines');
    expect(owners.map((o) => o.owner).every((o) => /^replica-[01]$/.test(o))).toBe(true);
    expect(await cluster.kill('SIGTERM')).toBe(0);
  });
});
