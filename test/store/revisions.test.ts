/**
 * The revision counter under concurrent writers (several pooled connections
 * on PostgreSQL): revisions are handed out in commit order, so a reader that
 * tails the log with `revision > last` never skips one that commits late.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { acceptedMachine } from '../../src/domain/lifecycle.js';
import { openStore } from '../../src/store/open.js';
import type { SqlStore } from '../../src/store/sql-store.js';
import { tempDir } from '../helpers/server.js';
import type { TestDatabase } from '../helpers/store-target.js';
import { createTestDatabase } from '../helpers/store-target.js';
import { join } from 'node:path';

let store: SqlStore;
let db: TestDatabase | null;

beforeAll(async () => {
  db = await createTestDatabase();
  store = await openStore(db !== null ? { kind: 'postgres', url: db.url } : { kind: 'sqlite', path: join(tempDir(), 'hangar.db') }, { poolSize: 8 });
});
afterAll(async () => {
  await store.close();
  await db?.drop();
});

async function newMachine(id: string) {
  const now = Date.now();
  return store.insertMachine(
    acceptedMachine({ machineId: id, orgId: '00000000-0000-4000-8000-000000000001', sizes: { vcpu: 1, memoryMib: 512, storageGib: 5 }, autosleepSeconds: 0, now }),
  );
}

describe('revisions', () => {
  it('concurrent commits: unique, gap-free, and a log tail never skips a late commit', async () => {
    const ids = Array.from({ length: 8 }, (_, i) => `dm-00000000-0000-7000-8000-00000000000${i}`);
    for (const id of ids) await newMachine(id);
    const start = await store.headRevision();
    const writers = ids.map(async (id) => {
      for (let i = 0; i < 60; i++) {
        await store.mutateMachine(id, (cur) => ({ patch: { autosleepSeconds: cur!.autosleepSeconds + 1 }, result: undefined }));
      }
    });
    // A tailer as the change feed of another replica reads: `revision > last`.
    let last = start;
    const seen: number[] = [];
    let done = false;
    const tail = (async () => {
      while (!done || last < start + ids.length * 60) {
        // Yield between reads, as the change feed (driven by commits and timers) does.
        await new Promise((r) => setImmediate(r));
        const batch = await store.readEvents(last, 1000);
        for (const e of batch) {
          seen.push(e.revision);
          last = e.revision;
        }
      }
    })();
    await Promise.all(writers);
    done = true;
    await tail;
    const expected = Array.from({ length: ids.length * 60 }, (_, i) => start + 1 + i);
    expect(seen).toEqual(expected);
    for (const id of ids) expect((await store.getMachine(id))!.autosleepSeconds).toBe(60);
  });

  it('a decision that changes nothing takes no revision', async () => {
    await newMachine('dm-00000000-0000-7000-8000-0000000000aa');
    const head = await store.headRevision();
    const res = await store.mutateMachine('dm-00000000-0000-7000-8000-0000000000aa', () => ({ patch: null, result: 'kept' }));
    expect(res.result).toBe('kept');
    expect(res.event).toBeNull();
    expect(await store.headRevision()).toBe(head);
  });

  it('a decision that throws commits nothing', async () => {
    const id = 'dm-00000000-0000-7000-8000-0000000000bb';
    await newMachine(id);
    const before = await store.getMachine(id);
    await expect(
      store.mutateMachine(id, () => {
        throw new Error('rejected');
      }),
    ).rejects.toThrow('rejected');
    expect(await store.getMachine(id)).toEqual(before);
  });

  it('changes committed together: a refused decision fails alone, the others commit', async () => {
    const ids = ['dm-00000000-0000-7000-8000-0000000000c1', 'dm-00000000-0000-7000-8000-0000000000c2', 'dm-00000000-0000-7000-8000-0000000000c3'];
    for (const id of ids) await newMachine(id);
    const head = await store.headRevision();
    const bump = (id: string) => store.mutateMachine(id, (cur) => ({ patch: { autosleepSeconds: cur!.autosleepSeconds + 7 }, result: id }));
    const results = await Promise.allSettled([
      bump(ids[0]!),
      store.mutateMachine(ids[1]!, () => {
        throw new Error('refused');
      }),
      bump(ids[2]!),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    // Two contiguous revisions for the two that committed (in either order: on PostgreSQL they are
    // separate transactions), none for the refused one.
    const events = await store.readEvents(head, 100);
    expect(events.map((e) => e.revision)).toEqual([head + 1, head + 2]);
    expect(events.map((e) => e.machineId).sort()).toEqual([ids[0], ids[2]]);
    expect((await store.getMachine(ids[1]!))!.autosleepSeconds).toBe(0);
  });

  it('a failing write leaves nothing half-committed', async () => {
    const id = 'dm-00000000-0000-7000-8000-0000000000cc';
    const head = await store.headRevision();
    // The same id twice in one tick: the second insert breaks the primary key.
    const results = await Promise.allSettled([newMachine(id), newMachine(id)]);
    expect(results.filter((r) => r.status === 'rejected').length).toBeGreaterThanOrEqual(1);
    const events = await store.readEvents(head, 100);
    const m = await store.getMachine(id);
    // Whatever committed is whole: the machine with exactly its one event, or neither.
    expect(events.map((e) => e.revision)).toEqual(m === undefined ? [] : [m.revision]);
    expect(await store.headRevision()).toBe(head + events.length);
  });
});
