/**
 * Restart safety: the real server, killed with SIGKILL in the middle of
 * transitions, started again on the same data directory. Every machine
 * converges to its desired state, and no revision is ever handed out twice.
 */
import { rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Api } from '../helpers/http.js';
import { tempDir } from '../helpers/server.js';
import type { ChildServer } from '../helpers/child-server.js';
import { adminKeyOf, startChildServer } from '../helpers/child-server.js';
import { openStream, statusFrames } from '../helpers/sse.js';

const dirs: string[] = [];
const children: ChildServer[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) await c.kill('SIGKILL');
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('hangar serve', () => {
  it('writes the admin key with mode 600 on first start and stops cleanly on SIGTERM', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const server = await startChildServer(dir);
    children.push(server);
    expect(statSync(join(dir, 'admin.key')).mode & 0o777).toBe(0o600);
    expect(server.output()).toContain(adminKeyOf(dir));
    expect(await server.kill('SIGTERM')).toBe(0);
  });

  it('converges every machine after SIGKILL mid-transition, reusing no revision', async () => {
    const dir = tempDir();
    dirs.push(dir);
    // Slow runtime operations, so the kill lands while machines are between phases.
    const env = { HANGAR_SIM_LATENCY_MS: '400' };
    const first = await startChildServer(dir, env);
    children.push(first);
    const api = new Api(first.url, adminKeyOf(dir));

    const ids: string[] = [];
    for (let i = 0; i < 2; i++) ids.push((await api.createMachine()).body.machine_id);
    await api.waitForPhase(ids[0]!, 'running', 20_000);
    await api.waitForPhase(ids[1]!, 'running', 20_000);

    // Every change committed before the kill, as the log had it.
    const before = new Map<number, string>();
    const record = (body: { status: { revision: string } }) => before.set(Number(body.status.revision), JSON.stringify(body));
    for (const id of ids) {
      const s = await openStream(`${first.url}/v1/machines/${id}/status/stream`, adminKeyOf(dir), { 'last-event-id': '0' });
      await s.ended;
      for (const f of statusFrames(s.frames)) before.set(f.revision, JSON.stringify(f.body));
    }
    // Then start transitions and kill at once, while they are under way.
    record((await api.post(`/v1/machines/${ids[0]}/sleep`)).body);
    record((await api.delete(`/v1/machines/${ids[1]}`)).body);
    for (let i = 0; i < 6; i++) {
      const created = await api.createMachine();
      record(created.body);
      ids.push(created.body.machine_id);
    }
    const phasesAtKill = await Promise.all(ids.map(async (id) => (await api.get(`/v1/machines/${id}`)).body.status.phase));
    await first.kill('SIGKILL');
    expect(phasesAtKill.some((p) => !['running', 'sleeping', 'destroyed'].includes(p))).toBe(true);

    const second = await startChildServer(dir, { HANGAR_SIM_LATENCY_MS: '5' });
    children.push(second);
    const api2 = new Api(second.url, adminKeyOf(dir));
    await api2.waitForPhase(ids[0]!, 'sleeping', 20_000);
    await api2.waitForPhase(ids[1]!, 'destroyed', 20_000);
    for (const id of ids.slice(2)) await api2.waitForPhase(id, 'running', 20_000);

    // Every machine's stream from the start: revisions strictly increase, and
    // every frame seen before the kill is unchanged (no revision reused).
    const all: number[] = [];
    for (const id of ids) {
      const s = await openStream(`${second.url}/v1/machines/${id}/status/stream`, adminKeyOf(dir), { 'last-event-id': '0' });
      await s.ended;
      const frames = statusFrames(s.frames);
      for (let i = 1; i < frames.length; i++) expect(frames[i]!.revision).toBeGreaterThan(frames[i - 1]!.revision);
      for (const f of frames) {
        all.push(f.revision);
        if (before.has(f.revision)) expect(JSON.stringify(f.body)).toBe(before.get(f.revision));
      }
    }
    expect(new Set(all).size).toBe(all.length);
    for (const rev of before.keys()) expect(all).toContain(rev);
    // After the restart, writes continue above everything committed before.
    const created = await api2.createMachine();
    expect(Number(created.body.status.revision)).toBeGreaterThan(Math.max(...all));
  });

  it('replays an Idempotency-Key answered before SIGKILL: the response was committed with its change', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const first = await startChildServer(dir);
    children.push(first);
    const body = { vcpu: 1, memory_mib: 512, storage_gib: 5 };
    const headers = { 'idempotency-key': 'create-before-kill' };
    const created = await new Api(first.url, adminKeyOf(dir)).post('/v1/machines', body, { headers });
    expect(created.status).toBe(202);
    await first.kill('SIGKILL');

    const second = await startChildServer(dir);
    children.push(second);
    const api = new Api(second.url, adminKeyOf(dir));
    const retried = await api.post('/v1/machines', body, { headers });
    expect(retried.status).toBe(202);
    expect(retried.text).toBe(created.text);
    expect(retried.headers.get('etag')).toBe(created.headers.get('etag'));
    // One machine: the retry did not create another.
    expect((await api.get('/v1/machines')).body.items.map((m: { machine_id: string }) => m.machine_id)).toEqual([created.body.machine_id]);
    // The same key with another body is still another request.
    expect((await api.post('/v1/machines', { ...body, vcpu: 2 }, { headers })).body.error_code).toBe('IDEMPOTENCY_KEY_REUSED');
  });
});
