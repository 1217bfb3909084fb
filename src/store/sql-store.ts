/**
 * The Store on Kysely: the same queries for SQLite and PostgreSQL.
 *
 * Revisions: one counter row. Every commit takes it first (UPDATE ... RETURNING
 * on SQLite, where transactions are serialised anyway; SELECT ... FOR UPDATE on
 * PostgreSQL), and holds it until COMMIT. So revisions are handed out in commit
 * order: when a reader sees revision N committed, every revision below N is
 * committed too, and a log tail `revision > R` never skips a late commit.
 * The same lock serialises placement decisions across replicas.
 */
import type { Kysely, Transaction } from 'kysely';
import { Migrator, sql } from 'kysely';
import { applyPatch, endsStream } from '../domain/lifecycle.js';
import type { Host } from '../domain/placement.js';
import { allocationOf } from '../domain/placement.js';
import { sizesEqual } from '../domain/sizes.js';
import type { Machine, Sizes } from '../domain/types.js';
import { toLifecycleResponse } from '../domain/types.js';
import * as keys from './api-key-queries.js';
import * as idempotency from './idempotency-queries.js';
import * as retention from './retention-queries.js';
import { migrationProvider } from './migrations.js';
import { machineToRow, rowToEvent, rowToMachine } from './rows.js';
import type { Database } from './schema.js';
import type {
  ApiKeyRecord,
  CommitListener,
  CompactionPolicy,
  Decision,
  Dialect,
  IdempotencyClaim,
  ListPage,
  MutationResult,
  RemoteCommits,
  Store,
  StoredEvent,
  StoredResponse,
  TxReader,
} from './store.js';

type Db = Kysely<Database>;
type Tx = Transaction<Database>;

/** PostgreSQL channel that carries committed revisions to other replicas. */
export const EVENTS_CHANNEL = 'hangar_events';

export interface SqlStoreOptions {
  readonly dialect: Dialect;
  readonly db: Db;
  readonly clock?: () => number;
  /** Extra teardown (closing the driver's pool, the SQLite handle). */
  readonly onClose?: () => Promise<void>;
  readonly remoteCommits?: RemoteCommits;
}

export async function migrate(db: Db): Promise<void> {
  const migrator = new Migrator({ db, provider: migrationProvider });
  const { error, results } = await migrator.migrateToLatest();
  if (error !== undefined) {
    const failed = results?.find((r) => r.status === 'Error')?.migrationName ?? 'unknown';
    throw new Error(`migration ${failed} failed: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** What a piece of committed work returns: its value and its event, or the refusal of its decision. */
type Work<T> = { value: T; event: StoredEvent | null } | { refused: unknown };

interface GroupPiece {
  work: (trx: Tx) => Promise<Work<unknown>>;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

/** Pieces of work per shared SQLite transaction, at most. */
const MAX_GROUP_COMMIT = 500;

export function eventOf(m: Machine): StoredEvent {
  return {
    revision: m.revision,
    machineId: m.machineId,
    orgId: m.orgId,
    phase: m.phase,
    body: JSON.stringify(toLifecycleResponse(m)),
    endsStream: endsStream(m),
    committedAt: m.lastProgressAt,
  };
}

export class SqlStore implements Store {
  readonly dialect: Dialect;
  readonly db: Db;
  readonly remoteCommits: RemoteCommits | undefined;
  private readonly clock: () => number;
  private readonly onCloseHook: (() => Promise<void>) | undefined;
  private readonly listeners: CommitListener[] = [];
  /** SQLite group commit: work waiting for the next shared transaction. */
  private group: GroupPiece[] = [];
  private draining = false;

  constructor(opts: SqlStoreOptions) {
    this.dialect = opts.dialect;
    this.db = opts.db;
    this.clock = opts.clock ?? Date.now;
    this.onCloseHook = opts.onClose;
    this.remoteCommits = opts.remoteCommits;
  }

  async close(): Promise<void> {
    await this.db.destroy();
    await this.onCloseHook?.();
  }

  onCommit(listener: CommitListener): void {
    this.listeners.push(listener);
  }

  private emit(events: readonly StoredEvent[]): void {
    for (const listener of this.listeners) listener(events);
  }

  // --- organisations and keys ---

  ensureOrg(orgId: string, name: string, now: number): Promise<void> {
    return keys.ensureOrg(this.db, orgId, name, now);
  }

  insertApiKey(rec: ApiKeyRecord & { keyHash: string }): Promise<void> {
    return keys.insertApiKey(this.db, rec);
  }

  findApiKeyByHash(keyHash: string): Promise<ApiKeyRecord | undefined> {
    return keys.findApiKeyByHash(this.db, keyHash);
  }

  listApiKeys(orgId?: string): Promise<ApiKeyRecord[]> {
    return keys.listApiKeys(this.db, orgId);
  }

  revokeApiKey(keyId: string, now: number): Promise<boolean> {
    return keys.revokeApiKey(this.db, keyId, now);
  }

  countApiKeys(): Promise<number> {
    return keys.countApiKeys(this.db);
  }

  async claimOnce(name: string): Promise<boolean> {
    const res = await this.db
      .insertInto('counters')
      .values({ name: `once:${name}`, value: 1 })
      .onConflict((oc) => oc.column('name').doNothing())
      .executeTakeFirst();
    return Number(res.numInsertedOrUpdatedRows ?? 0n) > 0;
  }

  // --- machines ---

  async getMachine(machineId: string): Promise<Machine | undefined> {
    const row = await this.db.selectFrom('machines').selectAll().where('machine_id', '=', machineId).executeTakeFirst();
    return row === undefined ? undefined : rowToMachine(row);
  }

  async listMachines(orgId: string, afterId: string | null, limit: number): Promise<ListPage> {
    let q = this.db.selectFrom('machines').selectAll().where('org_id', '=', orgId);
    if (afterId !== null) q = q.where('machine_id', '>', afterId);
    const rows = await q.orderBy('machine_id').limit(limit + 1).execute();
    return { machines: rows.slice(0, limit).map(rowToMachine), hasMore: rows.length > limit };
  }

  async listActiveMachineIds(): Promise<string[]> {
    const rows = await this.db
      .selectFrom('machines')
      .select('machine_id')
      .where((eb) =>
        eb.or([
          eb('phase', '!=', eb.ref('desired_state')),
          eb.and([eb('phase', '=', 'running'), eb('autosleep_seconds', '>', 0)]),
          eb('applied_vcpu', '!=', eb.ref('vcpu')),
          eb('applied_memory_mib', '!=', eb.ref('memory_mib')),
          eb('applied_storage_gib', '!=', eb.ref('storage_gib')),
        ]),
      )
      .where('phase', '!=', 'destroyed')
      .execute();
    return rows.map((r) => r.machine_id);
  }

  async listMachineIdsInPhase(phase: Machine['phase']): Promise<string[]> {
    const rows = await this.db.selectFrom('machines').select('machine_id').where('phase', '=', phase).execute();
    return rows.map((r) => r.machine_id);
  }

  async listPlacedMachines(phases: readonly Machine['phase'][]): Promise<Machine[]> {
    const rows = await this.db.selectFrom('machines').selectAll().where('phase', 'in', [...phases]).where('host_id', 'is not', null).execute();
    return rows.map(rowToMachine);
  }

  async insertMachine(
    machine: Omit<Machine, 'revision' | 'lastProgressAt' | 'logCompactedRevision'>,
    lease?: { owner: string; until: number },
  ): Promise<{ machine: Machine; event: StoredEvent }> {
    return this.commit(async (trx) => {
      const revision = await this.nextRevision(trx);
      const now = this.clock();
      const m: Machine = { ...machine, revision, lastProgressAt: now, lastTransitionAt: now, logCompactedRevision: 0 };
      await trx.insertInto('machines').values({ ...machineToRow(m), owner: lease?.owner ?? null, lease_until: lease?.until ?? null }).execute();
      const event = eventOf(m);
      await this.appendEvent(trx, event);
      return { value: { machine: m, event }, event };
    });
  }

  async mutateMachine<T>(
    machineId: string,
    decide: (current: Machine | undefined, tx: TxReader) => Promise<Decision<T>> | Decision<T>,
  ): Promise<MutationResult<T>> {
    return this.commit(async (trx): Promise<Work<MutationResult<T>>> => {
      await this.lockRevisions(trx);
      const row = await trx.selectFrom('machines').selectAll().where('machine_id', '=', machineId).executeTakeFirst();
      const current = row === undefined ? undefined : rowToMachine(row);
      let decision: Decision<T>;
      try {
        decision = await decide(current, this.txReader(trx));
      } catch (err) {
        // The decision refused (e.g. INVALID_STATE) before anything was written.
        return { refused: err };
      }
      if (current === undefined || decision.patch === null) {
        return { value: { machine: current, event: null, result: decision.result }, event: null };
      }
      const revision = await this.nextRevision(trx);
      const next = applyPatch(current, decision.patch, revision, this.clock());
      await trx.updateTable('machines').set(machineToRow(next)).where('machine_id', '=', machineId).execute();
      await this.moveAllocation(trx, current, next);
      const event = eventOf(next);
      await this.appendEvent(trx, event);
      return { value: { machine: next, event, result: decision.result }, event };
    });
  }

  /**
   * Runs `work` in a transaction and announces its event after COMMIT. On
   * SQLite, whose writers are serialised anyway, the commits of one
   * event-loop tick share one transaction (group commit): a COMMIT costs more
   * than the statements of a mutation. Each piece of work sees the writes of
   * those before it. A piece whose decision refuses wrote nothing and fails
   * alone; a failing write rolls the whole group back and fails every piece.
   */
  private commit<T>(work: (trx: Tx) => Promise<Work<T>>): Promise<T> {
    if (this.dialect !== 'sqlite') {
      return this.db
        .transaction()
        .execute(work)
        .then((out) => {
          if ('refused' in out) throw out.refused;
          if (out.event !== null) this.emit([out.event]);
          return out.value;
        });
    }
    return new Promise<T>((resolve, reject) => {
      this.group.push({ work: work as (trx: Tx) => Promise<Work<unknown>>, resolve: resolve as (v: unknown) => void, reject });
      if (!this.draining) {
        this.draining = true;
        setImmediate(() => void this.drainGroup());
      }
    });
  }

  private async drainGroup(): Promise<void> {
    while (this.group.length > 0) {
      const batch = this.group.splice(0, MAX_GROUP_COMMIT);
      const done: { piece: GroupPiece; value: unknown; event: StoredEvent | null }[] = [];
      try {
        await this.db.transaction().execute(async (trx) => {
          for (const piece of batch) {
            const out = await piece.work(trx);
            if ('refused' in out) piece.reject(out.refused);
            else done.push({ piece, value: out.value, event: out.event });
          }
        });
      } catch (err) {
        // Rolled back: every piece fails (rejecting one already refused changes nothing).
        for (const piece of batch) piece.reject(err);
        continue;
      }
      const events = done.flatMap((d) => (d.event === null ? [] : [d.event]));
      if (events.length > 0) this.emit(events);
      for (const d of done) d.piece.resolve(d.value);
    }
    this.draining = false;
  }

  async touchActivity(machineId: string, now: number): Promise<void> {
    await this.db
      .updateTable('machines')
      .set({ last_activity_at: now })
      .where('machine_id', '=', machineId)
      .where('last_activity_at', '<', now)
      .execute();
  }

  async claimMachine(machineId: string, owner: string, now: number, ttlMs: number): Promise<boolean> {
    const res = await this.db
      .updateTable('machines')
      .set({ owner, lease_until: now + ttlMs })
      .where('machine_id', '=', machineId)
      .where((eb) => eb.or([eb('owner', 'is', null), eb('owner', '=', owner), eb('lease_until', '<', now)]))
      .executeTakeFirst();
    return Number(res.numUpdatedRows) > 0;
  }

  async renewLeases(owner: string, now: number, ttlMs: number): Promise<string[]> {
    const rows = await this.db
      .updateTable('machines')
      .set({ lease_until: now + ttlMs })
      .where('owner', '=', owner)
      .returning('machine_id')
      .execute();
    return rows.map((r) => r.machine_id);
  }

  async listClaimable(owner: string, now: number): Promise<string[]> {
    const rows = await this.db
      .selectFrom('machines')
      .select('machine_id')
      .where('phase', '!=', 'destroyed')
      .where((eb) => eb.or([eb('owner', 'is', null), eb.and([eb('owner', '!=', owner), eb('lease_until', '<', now)])]))
      .execute();
    return rows.map((r) => r.machine_id);
  }

  async releaseLeases(owner: string): Promise<void> {
    await this.db.updateTable('machines').set({ owner: null, lease_until: null }).where('owner', '=', owner).execute();
  }

  private txReader(trx: Tx): TxReader {
    return {
      hosts: () => readHosts(trx),
      allocations: async (excludeMachineId: string | null): Promise<Map<string, Sizes>> => {
        const rows = await trx
          .selectFrom('hosts')
          .select(['host_id', 'allocated_vcpu', 'allocated_memory_mib', 'allocated_storage_gib'])
          .execute();
        const byHost = new Map<string, Sizes>(
          rows.map((r) => [r.host_id, { vcpu: r.allocated_vcpu, memoryMib: r.allocated_memory_mib, storageGib: r.allocated_storage_gib }]),
        );
        if (excludeMachineId === null) return byHost;
        // What the machine itself holds is not in its way.
        const own = await trx.selectFrom('machines').selectAll().where('machine_id', '=', excludeMachineId).executeTakeFirst();
        if (own === undefined || own.host_id === null) return byHost;
        const held = allocationOf(rowToMachine(own));
        const total = byHost.get(own.host_id);
        if (total !== undefined) {
          byHost.set(own.host_id, { vcpu: total.vcpu - held.vcpu, memoryMib: total.memoryMib - held.memoryMib, storageGib: total.storageGib - held.storageGib });
        }
        return byHost;
      },
    };
  }

  /** Keeps the hosts' allocation totals in step with a machine's change (same transaction). */
  private async moveAllocation(trx: Tx, before: Machine, after: Machine): Promise<void> {
    const was = allocationOf(before);
    const is = allocationOf(after);
    if (before.hostId === after.hostId && sizesEqual(was, is)) return;
    if (before.hostId !== null) await this.addAllocation(trx, before.hostId, was, -1);
    if (after.hostId !== null) await this.addAllocation(trx, after.hostId, is, 1);
  }

  private async addAllocation(trx: Tx, hostId: string, s: Sizes, sign: 1 | -1): Promise<void> {
    if (s.vcpu === 0 && s.memoryMib === 0 && s.storageGib === 0) return;
    await trx
      .updateTable('hosts')
      .set((eb) => ({
        allocated_vcpu: eb('allocated_vcpu', '+', sign * s.vcpu),
        allocated_memory_mib: eb('allocated_memory_mib', '+', sign * s.memoryMib),
        allocated_storage_gib: eb('allocated_storage_gib', '+', sign * s.storageGib),
      }))
      .where('host_id', '=', hostId)
      .execute();
  }

  /** Serialises commits (see the header). SQLite transactions already are. */
  private async lockRevisions(trx: Tx): Promise<void> {
    if (this.dialect !== 'postgres') return;
    await trx.selectFrom('counters').select('value').where('name', '=', 'revision').forUpdate().execute();
  }

  private async nextRevision(trx: Tx): Promise<number> {
    const row = await trx
      .updateTable('counters')
      .set((eb) => ({ value: eb('value', '+', 1) }))
      .where('name', '=', 'revision')
      .returning('value')
      .executeTakeFirstOrThrow();
    return Number(row.value);
  }

  private async appendEvent(trx: Tx, e: StoredEvent): Promise<void> {
    await trx
      .insertInto('events')
      .values({
        revision: e.revision,
        machine_id: e.machineId,
        org_id: e.orgId,
        phase: e.phase,
        body: e.body,
        ends_stream: e.endsStream ? 1 : 0,
        committed_at: e.committedAt,
      })
      .execute();
    if (this.dialect === 'postgres') {
      // Delivered at COMMIT, in commit order; carries only the revision (ids, never bodies).
      await sql`select pg_notify(${EVENTS_CHANNEL}, ${String(e.revision)})`.execute(trx);
    }
  }

  // --- event log ---

  async headRevision(): Promise<number> {
    const row = await this.db.selectFrom('counters').select('value').where('name', '=', 'revision').executeTakeFirstOrThrow();
    return Number(row.value);
  }

  async readEvents(afterRevision: number, limit: number): Promise<StoredEvent[]> {
    const rows = await this.db
      .selectFrom('events')
      .selectAll()
      .where('revision', '>', afterRevision)
      .orderBy('revision')
      .limit(limit)
      .execute();
    return rows.map(rowToEvent);
  }

  async readMachineEvents(machineId: string, afterRevision: number, limit: number): Promise<StoredEvent[]> {
    const rows = await this.db
      .selectFrom('events')
      .selectAll()
      .where('machine_id', '=', machineId)
      .where('revision', '>', afterRevision)
      .orderBy('revision')
      .limit(limit)
      .execute();
    return rows.map(rowToEvent);
  }

  compactEvents(policy: CompactionPolicy, now: number): Promise<number> {
    return retention.compactEvents(this.db, policy, now);
  }

  purgeDestroyed(destroyedBefore: number): Promise<number> {
    return retention.purgeDestroyed(this.db, destroyedBefore);
  }

  // --- hosts ---

  async upsertHosts(hosts: readonly Host[], now: number): Promise<void> {
    for (const h of hosts) {
      const values = {
        vcpu: h.capacity.vcpu,
        memory_mib: h.capacity.memoryMib,
        storage_gib: h.capacity.storageGib,
        ready: h.ready ? 1 : 0,
        updated_at: now,
      };
      await this.db
        .insertInto('hosts')
        .values({ host_id: h.hostId, ...values })
        .onConflict((oc) => oc.column('host_id').doUpdateSet(values))
        .execute();
    }
  }

  listHosts(): Promise<Host[]> {
    return readHosts(this.db);
  }

  // --- idempotency keys ---

  claimIdempotencyKey(orgId: string, key: string, requestHash: string, now: number, leaseMs: number): Promise<IdempotencyClaim> {
    return idempotency.claimIdempotencyKey(this.db, orgId, key, requestHash, now, leaseMs);
  }

  completeIdempotencyKey(orgId: string, key: string, response: StoredResponse): Promise<void> {
    return idempotency.completeIdempotencyKey(this.db, orgId, key, response);
  }

  releaseIdempotencyKey(orgId: string, key: string): Promise<void> {
    return idempotency.releaseIdempotencyKey(this.db, orgId, key);
  }

  purgeIdempotencyKeys(createdBefore: number): Promise<number> {
    return idempotency.purgeIdempotencyKeys(this.db, createdBefore);
  }
}

async function readHosts(db: Db | Tx): Promise<Host[]> {
  const rows = await db.selectFrom('hosts').selectAll().orderBy('host_id').execute();
  return rows.map((r) => ({
    hostId: r.host_id,
    capacity: { vcpu: r.vcpu, memoryMib: r.memory_mib, storageGib: r.storage_gib },
    ready: r.ready === 1,
  }));
}
