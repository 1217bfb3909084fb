/**
 * The commit path as callers see it: a decision made on the caller's copy
 * of a machine commits only while that copy is still the stored row, reads
 * never see a commit that is still open, and host totals follow commits and
 * upserts.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { acceptedMachine } from '../../src/domain/lifecycle.js';
import type { Machine } from '../../src/domain/types.js';
import { openStore } from '../../src/store/open.js';
import type { KeptResponse } from '../../src/store/store.js';
import type { SqlStore } from '../../src/store/sql-store.js';
import { tempDir } from '../helpers/server.js';
import type { TestDatabase } from '../helpers/store-target.js';
import { createTestDatabase } from '../helpers/store-target.js';

const ORG = '00000000-0000-4000-8000-000000000001';
let store: SqlStore;
let db: TestDatabase | null;
let seq = 0;

beforeAll(async () => {
  db = await createTestDatabase();
  store = await openStore(db !== null ? { kind: 'postgres', url: db.url } : { kind: 'sqlite', path: join(tempDir(), 'hangar.db') });
});
afterAll(async () => {
  await store.close();
  await db?.drop();
});

async function newMachine(): Promise<Machine> {
  const id = `dm-00000000-0000-7000-8000-${String(++seq).padStart(12, '0')}`;
  const now = Date.now();
  const { machine } = await store.insertMachine(
    acceptedMachine({ machineId: id, orgId: ORG, sizes: { vcpu: 1, memoryMib: 512, storageGib: 5 }, autosleepSeconds: 60, now }),
  );
  return machine;
}

/** A change of `m`'s autosleep whose commit has started and waits inside its decision until `release`. */
async function commitHeldOpen(m: Machine, autosleepSeconds: number) {
  let release = (): void => undefined;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const commit = store.mutateMachine(m.machineId, async () => {
    await gate;
    return { patch: { autosleepSeconds }, result: undefined };
  });
  await new Promise((resolve) => setTimeout(resolve, 20));
  return { commit, release };
}

describe('decisions on the caller’s copy (planned)', () => {
  it('commit on the copy while it is still the stored row', async () => {
    const planned = await newMachine();
    const seen: (Machine | undefined)[] = [];
    const res = await store.mutateMachine(
      planned.machineId,
      (cur) => {
        seen.push(cur);
        return { patch: { phase: 'placement_pending', reason: 'Scheduling' }, result: 'ok' };
      },
      planned,
    );
    expect(seen).toEqual([planned]);
    expect(res.event?.revision).toBe(planned.revision + 1);
    expect(await store.getMachine(planned.machineId)).toEqual(res.machine);
  });

  it('decide again on the stored row once another commit moved it on', async () => {
    const planned = await newMachine();
    await store.mutateMachine(planned.machineId, () => ({ patch: { autosleepSeconds: 120 }, result: undefined }));
    const seen: number[] = [];
    const res = await store.mutateMachine(
      planned.machineId,
      (cur) => {
        seen.push(cur!.revision);
        return { patch: { reason: 'Scheduling', phase: 'placement_pending' }, result: undefined };
      },
      planned,
    );
    // First on the stale copy, then on the row as stored; committed once, on top of the other change.
    expect(seen).toEqual([planned.revision, planned.revision + 1]);
    const stored = (await store.getMachine(planned.machineId))!;
    expect(stored).toMatchObject({ phase: 'placement_pending', autosleepSeconds: 120, revision: planned.revision + 2 });
    const events = await store.readMachineEvents(planned.machineId, 0, 10);
    expect(events.map((e) => e.revision)).toEqual([planned.revision, planned.revision + 1, planned.revision + 2]);
    expect(res.machine).toEqual(stored);
  });

  it('activity recorded since the copy was read is kept', async () => {
    const planned = await newMachine();
    const touchedAt = planned.lastActivityAt + 5_000;
    await store.touchActivity(planned.machineId, touchedAt);
    const seen: number[] = [];
    await store.mutateMachine(
      planned.machineId,
      (cur) => {
        seen.push(cur!.lastActivityAt);
        return { patch: { reason: 'Scheduling', phase: 'placement_pending' }, result: undefined };
      },
      planned,
    );
    expect(seen).toEqual([planned.lastActivityAt, touchedAt]);
    expect(await store.getMachine(planned.machineId)).toMatchObject({ phase: 'placement_pending', lastActivityAt: touchedAt });
  });
});

describe('decisions on the store’s own copy', () => {
  it('a row changed by another writer since it was read is decided on again as stored', async () => {
    const m = await newMachine();
    expect(await store.getMachine(m.machineId)).toEqual(m);
    // Another writer (here SQL behind the store's back) records activity without a revision.
    const at = m.lastActivityAt + 7_000;
    await store.db.updateTable('machines').set({ last_activity_at: at }).where('machine_id', '=', m.machineId).execute();
    const seen: number[] = [];
    const res = await store.mutateMachine(m.machineId, (cur) => {
      seen.push(cur!.lastActivityAt);
      return { patch: { autosleepSeconds: 90 }, result: undefined };
    });
    // SQLite decides first on its copy of the machine, PostgreSQL on the row; either way last on the row as stored.
    expect(seen.at(-1)).toBe(at);
    expect(res.machine).toMatchObject({ autosleepSeconds: 90, lastActivityAt: at, revision: m.revision + 1 });
    expect(await store.getMachine(m.machineId)).toEqual(res.machine);
  });

  it('a write that rolls back leaves every reader with the committed machine', async () => {
    const m = await newMachine();
    const clash = await newMachine();
    // Two writes in one tick; the second breaks the primary key, so on SQLite both roll back together.
    const results = await Promise.allSettled([
      store.mutateMachine(m.machineId, () => ({ patch: { autosleepSeconds: 240 }, result: undefined })),
      store.insertMachine({ ...clash, phase: 'accepted' }),
    ]);
    expect(results[1]!.status).toBe('rejected');
    const stored = (await store.getMachine(m.machineId))!;
    const committed = results[0]!.status === 'fulfilled';
    expect(stored.autosleepSeconds).toBe(committed ? 240 : 60);
    const events = await store.readMachineEvents(m.machineId, 0, 10);
    expect(events.map((e) => e.revision)).toEqual(committed ? [m.revision, stored.revision] : [m.revision]);
    expect(events.at(-1)!.revision).toBe(stored.revision);
  });
});

describe('idempotent responses, kept with their change', () => {
  const hash = 'a'.repeat(64);
  const keptAs = (key: string): KeptResponse => ({
    orgId: ORG,
    key,
    respond: (m, e) => ({ statusCode: 202, headers: { etag: `"${m.revision}"` }, body: e?.body ?? 'no change' }),
  });

  it('a retry after the commit replays the response, with nothing else recorded', async () => {
    const m = await newMachine();
    const key = `keep-${seq}`;
    expect(await store.claimIdempotencyKey(ORG, key, hash, Date.now(), 60_000)).toEqual({ kind: 'claimed' });
    const res = await store.mutateMachine(m.machineId, () => ({ patch: { autosleepSeconds: 30 }, result: undefined }), undefined, keptAs(key));
    expect(await store.claimIdempotencyKey(ORG, key, hash, Date.now(), 60_000)).toEqual({
      kind: 'replay',
      response: { statusCode: 202, headers: { etag: `"${res.machine!.revision}"` }, body: res.event!.body },
    });
  });

  it('two requests with one key at once: one claims it, the other finds it in flight', async () => {
    // A commit held open, so that both claims wait for it and then go on together.
    const { commit, release } = await commitHeldOpen(await newMachine(), 45);
    const key = `race-${seq}`;
    const claims = Promise.all([store.claimIdempotencyKey(ORG, key, hash, Date.now(), 60_000), store.claimIdempotencyKey(ORG, key, hash, Date.now(), 60_000)]);
    release();
    await commit;
    expect((await claims).map((c) => c.kind).sort()).toEqual(['claimed', 'in_flight']);
  });

  it('a change refused or rolled back records nothing: the key is still in flight', async () => {
    const m = await newMachine();
    const refusedKey = `refused-${seq}`;
    await store.claimIdempotencyKey(ORG, refusedKey, hash, Date.now(), 60_000);
    await expect(
      store.mutateMachine(
        m.machineId,
        () => {
          throw new Error('refused');
        },
        undefined,
        keptAs(refusedKey),
      ),
    ).rejects.toThrow('refused');
    expect(await store.claimIdempotencyKey(ORG, refusedKey, hash, Date.now(), 60_000)).toEqual({ kind: 'in_flight' });

    // An insert that breaks the primary key (on SQLite, with the whole group of its tick).
    const clashKey = `clash-${seq}`;
    await store.claimIdempotencyKey(ORG, clashKey, hash, Date.now(), 60_000);
    await expect(store.insertMachine({ ...m, phase: 'accepted' }, undefined, keptAs(clashKey))).rejects.toThrow();
    expect(await store.claimIdempotencyKey(ORG, clashKey, hash, Date.now(), 60_000)).toEqual({ kind: 'in_flight' });
  });
});

describe('reads and open commits', () => {
  it('a read while a commit is open returns committed state only', async () => {
    const m = await newMachine();
    const { commit, release } = await commitHeldOpen(m, 300);
    const read = store.getMachine(m.machineId);
    release();
    const [{ event }, seen] = await Promise.all([commit, read]);
    // Before the commit (another connection) or after it (SQLite waits), never in between.
    expect([m.revision, event!.revision]).toContain(seen!.revision);
    expect(seen!.autosleepSeconds).toBe(seen!.revision === m.revision ? 60 : 300);
  });
});

describe('hosts', () => {
  it('placements move the allocation totals; upserts change capacity', async () => {
    const hostId = `host-${++seq}`;
    await store.upsertHosts([{ hostId, capacity: { vcpu: 4, memoryMib: 4096, storageGib: 50 }, ready: true }], Date.now());
    const m = await newMachine();
    await store.mutateMachine(m.machineId, () => ({ patch: { phase: 'starting', hostId }, result: undefined }));
    const { result: allocated } = await store.mutateMachine(m.machineId, async (_cur, tx) => ({ patch: null, result: await tx.allocations(null) }));
    expect(allocated.get(hostId)).toEqual({ vcpu: 1, memoryMib: 512, storageGib: 5 });

    await store.upsertHosts([{ hostId, capacity: { vcpu: 8, memoryMib: 8192, storageGib: 50 }, ready: false }], Date.now());
    expect((await store.listHosts()).find((h) => h.hostId === hostId)).toEqual({ hostId, capacity: { vcpu: 8, memoryMib: 8192, storageGib: 50 }, ready: false });
    const { result: hosts } = await store.mutateMachine(m.machineId, async (_cur, tx) => ({ patch: null, result: await tx.hosts() }));
    expect(hosts.find((h) => h.hostId === hostId)?.ready).toBe(false);
  });
});
