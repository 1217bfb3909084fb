/**
 * The Store on Kysely: the same queries for SQLite and PostgreSQL. The commit
 * path and the per-request reads are hand-written SQL (hot-sql.ts).
 *
 * Revisions: one counter row. Every transaction of the commit path reads it
 * first (PostgreSQL: SELECT ... FOR UPDATE; SQLite: BEGIN IMMEDIATE already
 * serialises writers), hands out the next revisions in memory and writes the
 * counter back before COMMIT. So revisions are handed out in commit order:
 * when a reader sees revision N committed, every revision below N is
 * committed too, and a log tail `revision > R` never skips a late commit.
 * The same lock serialises placement decisions across replicas.
 */
import type { Kysely, Selectable } from 'kysely';
import { Migrator } from 'kysely';
import { applyPatch, endsStream } from '../domain/lifecycle.js';
import type { Host } from '../domain/placement.js';
import { allocationOf } from '../domain/placement.js';
import { sizesEqual } from '../domain/sizes.js';
import type { DesiredState, Machine, MachinePatch, Sizes } from '../domain/types.js';
import { toLifecycleResponse } from '../domain/types.js';
import * as keys from './api-key-queries.js';
import * as idempotency from './idempotency-queries.js';
import * as retention from './retention-queries.js';
import type { SqliteStatements, SqlRunner } from './hot-sql.js';
import { insertMachineParams, pgRunner, SQL, updateMachine } from './hot-sql.js';
import { migrationProvider } from './migrations.js';
import { MachineCache } from './machine-cache.js';
import { rowToEvent, rowToMachine } from './rows.js';
import type { Database, HostsTable, IdempotencyKeysTable, MachinesTable } from './schema.js';
import type {
  ApiKeyRecord,
  CommitListener,
  CompactionPolicy,
  Decision,
  Dialect,
  IdempotencyClaim,
  KeptResponse,
  ListPage,
  MutationResult,
  RemoteCommits,
  Store,
  StoredEvent,
  StoredResponse,
  TxReader,
} from './store.js';

type Db = Kysely<Database>;

/** PostgreSQL channel that carries committed revisions to other replicas. */
export const EVENTS_CHANNEL = 'hangar_events';

export interface SqlStoreOptions {
  readonly dialect: Dialect;
  readonly db: Db;
  readonly clock?: () => number;
  /** Extra teardown (closing the driver's pool, the SQLite handle). */
  readonly onClose?: () => Promise<void>;
  readonly remoteCommits?: RemoteCommits;
  /** SQLite: the handle's prepared statements, for the commit path (required with dialect sqlite). */
  readonly sqlite?: SqliteStatements;
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

/** One transaction of the commit path: its statements, and the newest revision handed out so far. */
interface CommitTx {
  readonly sql: SqlRunner;
  head: number;
}

interface GroupPiece {
  work: (tx: CommitTx) => Promise<Work<unknown>>;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

/** Every desired state (a Record: one added to the domain and not here does not compile). */
const DESIRED_STATES = Object.keys({ running: true, sleeping: true, destroyed: true } satisfies Record<DesiredState, true>) as DesiredState[];

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
  private readonly sqlite: SqliteStatements | undefined;
  /** Hand-written statements outside a transaction. */
  private readonly reads: SqlRunner;
  /** SQLite group commit: work waiting for the next shared transaction. */
  private group: GroupPiece[] = [];
  private draining = false;
  /** SQLite: settles when the open write transaction ends (see `settled`). */
  private writing: Promise<void> | null = null;
  /**
   * SQLite: the host rows as the database has them (with the open group's
   * writes), kept in step by the only process that writes them, this one.
   * Placement and create read them for every machine. Null until read, and
   * after a rollback or an upsert.
   */
  private hostRows: HostRow[] | null = null;
  /** SQLite: machines as committed (machine-cache.ts); null on PostgreSQL, where other replicas write too. */
  private readonly machines: MachineCache | null;
  /** Idempotency claims: rows shared by replicas, or (SQLite) in this process's memory (idempotency-queries.ts). */
  private readonly claims: idempotency.Claims;

  constructor(opts: SqlStoreOptions) {
    this.dialect = opts.dialect;
    this.db = opts.db;
    this.clock = opts.clock ?? Date.now;
    this.onCloseHook = opts.onClose;
    this.remoteCommits = opts.remoteCommits;
    if (opts.dialect === 'sqlite' && opts.sqlite === undefined) throw new Error('an SQLite store needs its statements');
    const sqlite = opts.sqlite;
    this.sqlite = sqlite;
    this.machines = sqlite !== undefined ? new MachineCache() : null;
    this.reads = sqlite !== undefined ? sqlite.runner() : pgRunner(opts.db);
    this.claims =
      sqlite !== undefined
        ? new idempotency.LocalClaims((orgId, key) => sqlite.prepare(SQL.selectKey).get(orgId, key) as IdempotencyKeysTable | undefined)
        : new idempotency.SharedClaims(this.reads);
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
    const cached = this.machines?.get(machineId);
    if (cached !== undefined) return cached;
    if (this.writing !== null) await this.settled();
    const m = await readMachine(this.reads, machineId);
    if (m !== undefined) this.machines?.fill(m);
    return m;
  }

  /**
   * SQLite has one connection: a statement run while a group commit is open
   * would read its uncommitted writes (which may yet roll back) or, for a
   * write, join it. Kysely's own queries wait on its connection lock; the
   * hand-written ones wait here.
   */
  private async settled(): Promise<void> {
    while (this.writing !== null) await this.writing;
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
    const rows = await this.db
      .selectFrom('machines')
      .select('machine_id')
      // Every desired state: lets the (desired_state, phase) index answer instead of a scan of every machine
      // (the reconciler asks for the pending ones each time capacity is freed).
      .where('desired_state', 'in', DESIRED_STATES)
      .where('phase', '=', phase)
      .execute();
    return rows.map((r) => r.machine_id);
  }

  async listPlacedMachines(phases: readonly Machine['phase'][]): Promise<Machine[]> {
    const rows = await this.db.selectFrom('machines').selectAll().where('phase', 'in', [...phases]).where('host_id', 'is not', null).execute();
    return rows.map(rowToMachine);
  }

  async insertMachine(
    machine: Omit<Machine, 'revision' | 'lastProgressAt' | 'logCompactedRevision'>,
    lease?: { owner: string; until: number },
    kept?: KeptResponse,
  ): Promise<{ machine: Machine; event: StoredEvent }> {
    const out = await this.commit(async (tx) => {
      const now = this.clock();
      const m: Machine = { ...machine, revision: tx.head + 1, lastProgressAt: now, lastTransitionAt: now, logCompactedRevision: 0 };
      await tx.sql.run(SQL.insertMachine, [...insertMachineParams(m), lease?.owner ?? null, lease?.until ?? null]);
      tx.head = m.revision;
      this.machines?.stage(m);
      const event = eventOf(m);
      await this.appendEvent(tx.sql, event);
      await this.keep(tx.sql, kept, m, event);
      return { value: { machine: m, event }, event };
    });
    this.claimOver(kept);
    return out;
  }

  async mutateMachine<T>(
    machineId: string,
    decide: (current: Machine | undefined, tx: TxReader) => Promise<Decision<T>> | Decision<T>,
    planned?: Machine,
    kept?: KeptResponse,
  ): Promise<MutationResult<T>> {
    const out = await this.commit(async (tx): Promise<Work<MutationResult<T>>> => {
      const work = await this.decideAndWrite(tx, machineId, decide, planned);
      if (!('refused' in work) && work.value.machine !== undefined) await this.keep(tx.sql, kept, work.value.machine, work.value.event);
      return work;
    });
    this.claimOver(kept);
    return out;
  }

  /** Records an idempotent request's response in the transaction of the change it made. */
  private async keep(sql: SqlRunner, kept: KeptResponse | undefined, machine: Machine, event: StoredEvent | null): Promise<void> {
    if (kept !== undefined) await this.claims.complete(sql, kept.orgId, kept.key, kept.respond(machine, event));
  }

  /** After the COMMIT that recorded its response, a claim is over. */
  private claimOver(kept: KeptResponse | undefined): void {
    if (kept !== undefined) this.claims.done(kept.orgId, kept.key);
  }

  /** The decision on the machine, and its write (see `mutateMachine` in store.ts). */
  private async decideAndWrite<T>(
    tx: CommitTx,
    machineId: string,
    decide: (current: Machine | undefined, tx: TxReader) => Promise<Decision<T>> | Decision<T>,
    planned: Machine | undefined,
  ): Promise<Work<MutationResult<T>>> {
    const reader = this.txReader(tx.sql);
    const copy = planned ?? this.machines?.getInTransaction(machineId);
    if (copy !== undefined) {
      // Decided on the caller's or the cache's copy; written only if the row is still that copy.
      const decision = await decideOrRefuse(decide, copy, reader);
      if ('refused' in decision) return decision;
      if (decision.patch === null) return { value: { machine: copy, event: null, result: decision.result }, event: null };
      const written = await this.write(tx, copy, decision.patch, true);
      if (written !== null) return { value: { ...written, result: decision.result }, event: written.event };
      // It moved on since it was read: decide again on the row as stored.
    }
    const current = await readMachine(tx.sql, machineId);
    const decision = await decideOrRefuse(decide, current, reader);
    if ('refused' in decision) return decision;
    if (current === undefined || decision.patch === null) {
      return { value: { machine: current, event: null, result: decision.result }, event: null };
    }
    const written = (await this.write(tx, current, decision.patch, false))!;
    return { value: { ...written, result: decision.result }, event: written.event };
  }

  /**
   * Commits `patch` over `before` with the next revision: the row, the hosts'
   * allocation totals, the event. With `fenced`, null (and nothing written)
   * when the stored row is no longer `before`.
   */
  private async write(tx: CommitTx, before: Machine, patch: MachinePatch, fenced: boolean): Promise<{ machine: Machine; event: StoredEvent } | null> {
    const next = applyPatch(before, patch, tx.head + 1, this.clock());
    const update = updateMachine(before, next, fenced);
    if ((await tx.sql.run(update.text, update.params)) === 0) return null;
    tx.head = next.revision;
    this.machines?.stage(next);
    await this.moveAllocation(tx.sql, before, next);
    const event = eventOf(next);
    await this.appendEvent(tx.sql, event);
    return { machine: next, event };
  }

  /**
   * Runs `work` in a transaction and announces its event after COMMIT. On
   * SQLite, whose writers are serialised anyway, the commits of one
   * event-loop tick share one transaction (group commit): a COMMIT costs more
   * than the statements of a mutation. Each piece of work sees the writes of
   * those before it. A piece whose decision refuses wrote nothing and fails
   * alone; a failing write rolls the whole group back and fails every piece.
   */
  private commit<T>(work: (tx: CommitTx) => Promise<Work<T>>): Promise<T> {
    if (this.sqlite === undefined) {
      return this.inTransaction(work).then((out) => {
        if ('refused' in out) throw out.refused;
        if (out.event !== null) this.emit([out.event]);
        return out.value;
      });
    }
    return new Promise<T>((resolve, reject) => {
      this.group.push({ work: work as (tx: CommitTx) => Promise<Work<unknown>>, resolve: resolve as (v: unknown) => void, reject });
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
        await this.inTransaction(async (tx) => {
          for (const piece of batch) {
            const out = await piece.work(tx);
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

  /** A transaction of the commit path, holding the revision counter (see the header) until COMMIT. */
  private async inTransaction<T>(work: (tx: CommitTx) => Promise<T>): Promise<T> {
    const sqlite = this.sqlite;
    if (sqlite === undefined) return this.db.transaction().execute((trx) => withRevisions(pgRunner(trx), SQL.lockRevision, work));
    // Kysely's connection lock keeps its own queries out until COMMIT; `writing` keeps the hand-written ones out.
    return this.db.connection().execute(async () => {
      const sql = sqlite.runner();
      let release = (): void => undefined;
      this.writing = new Promise<void>((resolve) => (release = resolve));
      try {
        await sql.run(SQL.beginImmediate, []);
        const out = await withRevisions(sql, SQL.readRevision, work);
        await sql.run(SQL.commit, []);
        this.machines?.commit();
        return out;
      } catch (err) {
        // The cached host rows may hold the rolled-back allocations.
        this.hostRows = null;
        this.machines?.rollback();
        if (sqlite.handle.inTransaction) await sql.run(SQL.rollback, []);
        throw err;
      } finally {
        this.writing = null;
        release();
      }
    });
  }

  async touchActivity(machineId: string, now: number): Promise<void> {
    if (this.writing !== null) await this.settled();
    await this.reads.run(SQL.touchActivity, [now, machineId, now]);
    this.machines?.touch(machineId, now);
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

  /** The host rows; from memory on SQLite once read (see `hostRows`). */
  private async readHostRows(sql: SqlRunner): Promise<HostRow[]> {
    if (this.sqlite === undefined) return sql.rows<HostRow>(SQL.selectHosts, []);
    this.hostRows ??= await sql.rows<HostRow>(SQL.selectHosts, []);
    return this.hostRows;
  }

  /** Reads inside a commit; the host rows are read once per decision. */
  private txReader(sql: SqlRunner): TxReader {
    let rows: Promise<HostRow[]> | undefined;
    const hostRows = () => (rows ??= this.readHostRows(sql));
    return {
      hosts: async () => (await hostRows()).map(toHost),
      allocations: async (exclude: Machine | null): Promise<Map<string, Sizes>> => {
        const byHost = new Map<string, Sizes>(
          (await hostRows()).map((r) => [r.host_id, { vcpu: r.allocated_vcpu, memoryMib: r.allocated_memory_mib, storageGib: r.allocated_storage_gib }]),
        );
        // What the machine itself holds is not in its way.
        if (exclude === null || exclude.hostId === null) return byHost;
        const total = byHost.get(exclude.hostId);
        if (total !== undefined) {
          const held = allocationOf(exclude);
          byHost.set(exclude.hostId, { vcpu: total.vcpu - held.vcpu, memoryMib: total.memoryMib - held.memoryMib, storageGib: total.storageGib - held.storageGib });
        }
        return byHost;
      },
    };
  }

  /** Keeps the hosts' allocation totals in step with a machine's change (same transaction). */
  private async moveAllocation(sql: SqlRunner, before: Machine, after: Machine): Promise<void> {
    const was = allocationOf(before);
    const is = allocationOf(after);
    if (before.hostId === after.hostId && sizesEqual(was, is)) return;
    if (before.hostId !== null) await this.addAllocation(sql, before.hostId, was, -1);
    if (after.hostId !== null) await this.addAllocation(sql, after.hostId, is, 1);
  }

  private async addAllocation(sql: SqlRunner, hostId: string, s: Sizes, sign: 1 | -1): Promise<void> {
    if (s.vcpu === 0 && s.memoryMib === 0 && s.storageGib === 0) return;
    await sql.run(SQL.addAllocation, [sign * s.vcpu, sign * s.memoryMib, sign * s.storageGib, hostId]);
    const row = this.hostRows?.find((r) => r.host_id === hostId);
    if (row !== undefined) {
      row.allocated_vcpu += sign * s.vcpu;
      row.allocated_memory_mib += sign * s.memoryMib;
      row.allocated_storage_gib += sign * s.storageGib;
    }
  }

  private async appendEvent(sql: SqlRunner, e: StoredEvent): Promise<void> {
    await sql.run(SQL.insertEvent, [e.revision, e.machineId, e.orgId, e.phase, e.body, e.endsStream ? 1 : 0, e.committedAt]);
    if (this.dialect === 'postgres') {
      // Delivered at COMMIT, in commit order; carries only the revision (ids, never bodies).
      await sql.rows(SQL.notify, [EVENTS_CHANNEL, String(e.revision)]);
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

  async compactEvents(policy: CompactionPolicy, now: number): Promise<number> {
    const deleted = await retention.compactEvents(this.db, policy, now);
    if (deleted > 0) this.machines?.clear();
    return deleted;
  }

  async purgeDestroyed(destroyedBefore: number): Promise<number> {
    const purged = await retention.purgeDestroyed(this.db, destroyedBefore);
    if (purged > 0) this.machines?.clear();
    return purged;
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
    this.hostRows = null;
  }

  async listHosts(): Promise<Host[]> {
    if (this.writing !== null) await this.settled();
    return (await this.readHostRows(this.reads)).map(toHost);
  }

  // --- idempotency keys ---

  async claimIdempotencyKey(orgId: string, key: string, requestHash: string, now: number, leaseMs: number): Promise<IdempotencyClaim> {
    // SQLite reads the key on the store's one connection: committed rows only once no group transaction is open.
    if (this.writing !== null) await this.settled();
    return this.claims.claim(orgId, key, requestHash, now, leaseMs);
  }

  /** A response recorded on its own: one that changed nothing (a refusal). */
  async completeIdempotencyKey(orgId: string, key: string, response: StoredResponse): Promise<void> {
    await this.writeOutsideLog((sql) => this.claims.complete(sql, orgId, key, response));
    this.claims.done(orgId, key);
  }

  async releaseIdempotencyKey(orgId: string, key: string): Promise<void> {
    try {
      await this.writeOutsideLog((sql) => this.claims.release(sql, orgId, key));
    } finally {
      this.claims.done(orgId, key);
    }
  }

  /**
   * Writes of the request path that take no revision (idempotency keys). On
   * SQLite they join the group commit: a COMMIT of their own cost more than
   * the mutation they guard. On PostgreSQL they run as they come, without
   * the revision lock.
   */
  private writeOutsideLog(work: (sql: SqlRunner) => Promise<void>): Promise<void> {
    if (this.sqlite === undefined) return work(this.reads);
    return this.commit(async (tx) => ({ value: await work(tx.sql), event: null }));
  }

  purgeIdempotencyKeys(createdBefore: number): Promise<number> {
    return idempotency.purgeIdempotencyKeys(this.db, createdBefore);
  }
}

type HostRow = Selectable<HostsTable>;

function toHost(r: HostRow): Host {
  return { hostId: r.host_id, capacity: { vcpu: r.vcpu, memoryMib: r.memory_mib, storageGib: r.storage_gib }, ready: r.ready === 1 };
}

async function readMachine(sql: SqlRunner, machineId: string): Promise<Machine | undefined> {
  const [row] = await sql.rows<Selectable<MachinesTable>>(SQL.selectMachine, [machineId]);
  return row === undefined ? undefined : rowToMachine(row);
}

/** A decision, or its refusal (e.g. INVALID_STATE) before anything was written. */
async function decideOrRefuse<T>(
  decide: (current: Machine | undefined, tx: TxReader) => Promise<Decision<T>> | Decision<T>,
  current: Machine | undefined,
  reader: TxReader,
): Promise<Decision<T> | { refused: unknown }> {
  try {
    return await decide(current, reader);
  } catch (err) {
    return { refused: err };
  }
}

/** Runs `work` with the counter's value (read by `readSql`, which may lock it) and writes back what it handed out. */
async function withRevisions<T>(sql: SqlRunner, readSql: typeof SQL.readRevision | typeof SQL.lockRevision, work: (tx: CommitTx) => Promise<T>): Promise<T> {
  const [row] = await sql.rows<{ value: number }>(readSql, []);
  if (row === undefined) throw new Error('the revision counter is missing');
  const tx: CommitTx = { sql, head: Number(row.value) };
  const out = await work(tx);
  if (tx.head !== Number(row.value)) await sql.run(SQL.writeRevision, [tx.head]);
  return out;
}
