/**
 * SQLite only: machines as committed, kept in memory by the one process that
 * writes them, so that a GET, a mutation's decision and every reconciler step
 * do not read the row again (a point SELECT and its row object cost ~15 µs,
 * two or three times per mutation).
 *
 * Safety does not rest on the copy being fresh: every write decided on a
 * cached copy is fenced on its revision and activity time in SQL (see
 * `updateMachine`), and a fence that changes no row makes the store read the
 * row and decide again. The copy only saves the read when it is right, which
 * it is unless a write bypassed the store's commit path (compaction and purge
 * clear the cache; touches update it).
 *
 * Writes of the open group transaction are staged and become visible to
 * readers outside it only at COMMIT; a rollback drops them.
 */
import type { Machine } from '../domain/types.js';

/** Machines kept, at most; the least recently written or read from the database go first. */
export const MACHINE_CACHE_LIMIT = 50_000;

export class MachineCache {
  private readonly committed = new Map<string, Machine>();
  private staged = new Map<string, Machine>();

  constructor(private readonly limit = MACHINE_CACHE_LIMIT) {}

  /** As committed. */
  get(machineId: string): Machine | undefined {
    return this.committed.get(machineId);
  }

  /** As the open transaction sees it: its own writes first. */
  getInTransaction(machineId: string): Machine | undefined {
    return this.staged.get(machineId) ?? this.committed.get(machineId);
  }

  /** A write of the open transaction. */
  stage(m: Machine): void {
    this.staged.set(m.machineId, m);
  }

  /** The open transaction committed: its writes become the committed copies. */
  commit(): void {
    for (const m of this.staged.values()) this.put(m);
    this.staged = new Map();
  }

  rollback(): void {
    this.staged = new Map();
  }

  /**
   * A row read outside any transaction. It never replaces a newer copy: the
   * read may have run before a commit that has been applied here since.
   */
  fill(m: Machine): void {
    const have = this.committed.get(m.machineId);
    if (have !== undefined && (have.revision > m.revision || (have.revision === m.revision && have.lastActivityAt >= m.lastActivityAt))) return;
    this.put(m);
  }

  /** `touchActivity` committed outside the revisioned path. */
  touch(machineId: string, at: number): void {
    const have = this.committed.get(machineId);
    if (have !== undefined && have.lastActivityAt < at) this.committed.set(machineId, { ...have, lastActivityAt: at });
  }

  /** After writes that bypass the commit path (compaction, purge). */
  clear(): void {
    this.committed.clear();
  }

  get size(): number {
    return this.committed.size;
  }

  private put(m: Machine): void {
    // Re-inserted at the end, so the first key is the one to evict.
    this.committed.delete(m.machineId);
    this.committed.set(m.machineId, m);
    if (this.committed.size > this.limit) this.committed.delete(this.committed.keys().next().value!);
  }
}
