/**
 * The SQLite store's copy of committed machines (src/store/machine-cache.ts):
 * a transaction's writes are seen outside it only once committed, a late
 * read never replaces a newer copy, and the copy stays bounded.
 */
import { describe, expect, it } from 'vitest';
import { acceptedMachine } from '../../src/domain/lifecycle.js';
import type { Machine } from '../../src/domain/types.js';
import { MachineCache } from '../../src/store/machine-cache.js';

function machine(n: number, revision = 1): Machine {
  const m = acceptedMachine({
    machineId: `dm-00000000-0000-7000-8000-${String(n).padStart(12, '0')}`,
    orgId: '00000000-0000-4000-8000-000000000001',
    sizes: { vcpu: 1, memoryMib: 512, storageGib: 5 },
    autosleepSeconds: 60,
    now: 1_000,
  });
  return { ...m, revision, lastProgressAt: 1_000, logCompactedRevision: 0 };
}

describe('MachineCache', () => {
  it('a staged write is seen inside its transaction only, until COMMIT', () => {
    const cache = new MachineCache();
    const v1 = machine(1, 1);
    cache.fill(v1);
    const v2 = { ...v1, revision: 2, phase: 'starting' as const };
    cache.stage(v2);
    expect(cache.get(v1.machineId)).toBe(v1);
    expect(cache.getInTransaction(v1.machineId)).toBe(v2);
    cache.commit();
    expect(cache.get(v1.machineId)).toBe(v2);
  });

  it('a rollback drops the staged writes and keeps the committed copies', () => {
    const cache = new MachineCache();
    const v1 = machine(2, 1);
    cache.fill(v1);
    cache.stage({ ...v1, revision: 2 });
    cache.stage(machine(3, 3));
    cache.rollback();
    cache.commit();
    expect(cache.get(v1.machineId)).toBe(v1);
    expect(cache.get(machine(3).machineId)).toBeUndefined();
  });

  it('a read that ran before a commit never replaces what that commit wrote', () => {
    const cache = new MachineCache();
    const v1 = machine(4, 1);
    const v2 = { ...v1, revision: 2 };
    cache.stage(v2);
    cache.commit();
    cache.fill(v1);
    expect(cache.get(v1.machineId)).toBe(v2);
    // Same revision, newer activity (recorded without a revision): the newer activity wins.
    const touched = { ...v2, lastActivityAt: v2.lastActivityAt + 10 };
    cache.fill(touched);
    expect(cache.get(v1.machineId)).toBe(touched);
    cache.fill(v2);
    expect(cache.get(v1.machineId)).toBe(touched);
  });

  it('touches only move activity forward', () => {
    const cache = new MachineCache();
    const v1 = machine(5, 1);
    cache.fill(v1);
    cache.touch(v1.machineId, v1.lastActivityAt + 50);
    cache.touch(v1.machineId, v1.lastActivityAt + 20);
    expect(cache.get(v1.machineId)).toMatchObject({ revision: 1, lastActivityAt: v1.lastActivityAt + 50 });
    cache.touch(machine(6).machineId, 99);
    expect(cache.get(machine(6).machineId)).toBeUndefined();
  });

  it('holds at most its limit, dropping the copy longest untouched by a write or read', () => {
    const cache = new MachineCache(3);
    for (let n = 10; n < 13; n++) cache.fill(machine(n, 1));
    // Machine 10 is written again: now the newest.
    cache.stage({ ...machine(10), revision: 2 });
    cache.commit();
    cache.fill(machine(13, 1));
    expect(cache.size).toBe(3);
    expect(cache.get(machine(11).machineId)).toBeUndefined();
    expect(cache.get(machine(10).machineId)?.revision).toBe(2);
    expect(cache.get(machine(13).machineId)).toBeDefined();
  });
});
