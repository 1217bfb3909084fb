/**
 * SQLite checkpoints run on a thread of their own: under a steady stream of
 * commits what was committed keeps reaching the database file itself (not
 * only every 1,000 WAL pages, as SQLite's automatic checkpoint does), the WAL
 * keeps being reused instead of growing with everything written, and closing
 * the store leaves no WAL behind.
 */
import { copyFileSync, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { acceptedMachine } from '../../src/domain/lifecycle.js';
import { openStore } from '../../src/store/open.js';
import { tempDir } from '../helpers/server.js';

const ORG = '00000000-0000-4000-8000-000000000001';
const MIB = 1024 * 1024;

describe('SQLite checkpoints on a thread of their own', () => {
  it('keep the WAL bounded under commits, and closing leaves only the database file', async () => {
    const path = join(tempDir(), 'hangar.db');
    const store = await openStore({ kind: 'sqlite', path }, { checkpointThread: true });
    const id = 'dm-00000000-0000-7000-8000-000000000001';
    await store.insertMachine(acceptedMachine({ machineId: id, orgId: ORG, sizes: { vcpu: 1, memoryMib: 512, storageGib: 5 }, autosleepSeconds: 60, now: Date.now() }));
    // Commits spread over ~3 s, as a busy server makes them, each its own transaction.
    const walSizes: number[] = [];
    for (let i = 0; i < 60; i++) {
      for (let j = 0; j < 50; j++) await store.mutateMachine(id, (cur) => ({ patch: { autosleepSeconds: cur!.autosleepSeconds + 1 }, result: undefined }));
      walSizes.push(statSync(`${path}-wal`).size);
      await new Promise((r) => setTimeout(r, 50));
    }
    const head = await store.headRevision();
    // 3,000 commits of at least three 4 KiB pages each (machine row, event, counter) put over 35 MiB
    // through the WAL; it is reused from its start instead, never beyond SQLite's backstop (16 MiB).
    expect(Math.max(...walSizes)).toBeLessThan(18 * MIB);

    // The database file alone (a copy without its WAL) soon holds the last commit too.
    const copyDir = tempDir();
    const inFile = async (): Promise<number> => {
      copyFileSync(path, join(copyDir, 'copy.db'));
      let copy: BetterSqlite3.Database | undefined;
      try {
        copy = new BetterSqlite3(join(copyDir, 'copy.db'), { readonly: true });
        return (copy.prepare('select max(revision) as r from events').get() as { r: number }).r;
      } catch {
        return -1; // copied while the checkpoint was writing pages: a torn copy, look again
      } finally {
        copy?.close();
      }
    };
    let seen = await inFile();
    for (let i = 0; i < 50 && seen !== head; i++) {
      await new Promise((r) => setTimeout(r, 200));
      seen = await inFile();
    }
    expect(seen).toBe(head);

    await store.close();
    expect(existsSync(`${path}-wal`) ? statSync(`${path}-wal`).size : 0).toBe(0);
    const reopened = await openStore({ kind: 'sqlite', path }, { checkpointThread: true });
    expect(await reopened.headRevision()).toBe(head);
    expect((await reopened.getMachine(id))?.autosleepSeconds).toBe(60 + 3_000);
    await reopened.close();
  });
});
