/**
 * The statements of the commit path (and the per-request reads around it) as
 * SQL text written once for both dialects. Building them with Kysely on every
 * call cost ~19% of the server's CPU in the lifecycle benchmark. SQLite runs
 * them as cached prepared statements on the better-sqlite3 handle; PostgreSQL
 * as raw queries through Kysely (its pool, its transaction), with `$n`
 * placeholders instead of `?`.
 */
import type BetterSqlite3 from 'better-sqlite3';
import type { Kysely, SqliteDatabase, Transaction } from 'kysely';
import { CompiledQuery } from 'kysely';
import type { Machine } from '../domain/types.js';
import { MACHINE_COLUMNS, machineToRow } from './rows.js';
import type { Database } from './schema.js';

/** Runs one statement. `rows` for statements that return rows, `run` (rows changed) for the others. */
export interface SqlRunner {
  rows<R>(sqlText: string, params: readonly unknown[]): Promise<R[]>;
  run(sqlText: string, params: readonly unknown[]): Promise<number>;
}

const SET_COLUMNS = MACHINE_COLUMNS.filter((c) => c !== 'machine_id');

/** Parameters of insertMachine, without the lease. */
export function insertMachineParams(m: Machine): unknown[] {
  const row = machineToRow(m);
  return MACHINE_COLUMNS.map((c) => row[c]);
}

/**
 * The UPDATE that turns row `before` into `next`, setting only the columns
 * that change: SQLite rewrites an index's entry for every indexed column in
 * the SET list, changed or not (org_id, desired_state, phase). With `fence`,
 * it changes nothing unless the row still has `before`'s revision and
 * activity (it is the row the change was decided on). The few distinct texts
 * stay in the statement cache.
 */
export function updateMachine(before: Machine, next: Machine, fence: boolean): { text: string; params: unknown[] } {
  const was = machineToRow(before);
  const is = machineToRow(next);
  const columns = SET_COLUMNS.filter((c) => was[c] !== is[c]);
  const params: unknown[] = columns.map((c) => is[c]);
  params.push(next.machineId);
  let text = `update machines set ${columns.map((c) => `${c} = ?`).join(', ')} where machine_id = ?`;
  if (fence) {
    text += ' and revision = ? and last_activity_at = ?';
    params.push(before.revision, before.lastActivityAt);
  }
  return { text, params };
}

export const SQL = {
  selectMachine: 'select * from machines where machine_id = ?',
  insertMachine: `insert into machines (${MACHINE_COLUMNS.join(', ')}, owner, lease_until) values (${MACHINE_COLUMNS.map(() => '?').join(', ')}, ?, ?)`,
  touchActivity: 'update machines set last_activity_at = ? where machine_id = ? and last_activity_at < ?',
  insertEvent: 'insert into events (revision, machine_id, org_id, phase, body, ends_stream, committed_at) values (?, ?, ?, ?, ?, ?, ?)',
  readRevision: "select value from counters where name = 'revision'",
  /** PostgreSQL: the counter row is the commit lock (docs/design.md). */
  lockRevision: "select value from counters where name = 'revision' for update",
  writeRevision: "update counters set value = ? where name = 'revision'",
  notify: 'select pg_notify(?, ?)',
  selectHosts: 'select * from hosts order by host_id',
  addAllocation:
    'update hosts set allocated_vcpu = allocated_vcpu + ?, allocated_memory_mib = allocated_memory_mib + ?, allocated_storage_gib = allocated_storage_gib + ? where host_id = ?',
  claimKey:
    "insert into idempotency_keys (org_id, idem_key, request_hash, state, status_code, headers, body, created_at, locked_until) values (?, ?, ?, 'in_flight', null, null, null, ?, ?) on conflict (org_id, idem_key) do nothing",
  selectKey: 'select * from idempotency_keys where org_id = ? and idem_key = ?',
  /** Fenced on the lease the caller saw. */
  takeOverKey: "update idempotency_keys set locked_until = ? where org_id = ? and idem_key = ? and state = 'in_flight' and locked_until = ?",
  completeKey: "update idempotency_keys set state = 'done', status_code = ?, headers = ?, body = ? where org_id = ? and idem_key = ?",
  /** SQLite, whose in-flight claims are held in memory (LocalClaims): the key's one row. */
  upsertDoneKey:
    "insert into idempotency_keys (org_id, idem_key, request_hash, state, status_code, headers, body, created_at, locked_until) values (?, ?, ?, 'done', ?, ?, ?, ?, ?) on conflict (org_id, idem_key) do update set request_hash = excluded.request_hash, state = 'done', status_code = excluded.status_code, headers = excluded.headers, body = excluded.body",
  releaseKey: "delete from idempotency_keys where org_id = ? and idem_key = ? and state = 'in_flight'",
  beginImmediate: 'begin immediate',
  commit: 'commit',
  rollback: 'rollback',
} as const;

/** Distinct SQL texts kept prepared; `in (...)` lists make a few more than the queries in the code. */
const STATEMENT_CACHE_SIZE = 512;

/**
 * One prepared statement per SQL text (Kysely's SQLite driver would prepare
 * on every call: 12% of the server's CPU once). Statements run synchronously
 * to completion, so a statement can be reused by the next caller.
 */
export class SqliteStatements {
  private readonly cache = new Map<string, BetterSqlite3.Statement>();

  constructor(readonly handle: BetterSqlite3.Database) {}

  prepare(sqlText: string): BetterSqlite3.Statement {
    let stmt = this.cache.get(sqlText);
    if (stmt === undefined) {
      stmt = this.handle.prepare(sqlText);
      if (this.cache.size >= STATEMENT_CACHE_SIZE) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(sqlText, stmt);
    }
    return stmt;
  }

  /** The handle as Kysely's SqliteDialect takes it, sharing the cache. */
  forKysely(): SqliteDatabase {
    return { close: () => this.handle.close(), prepare: (sqlText: string) => this.prepare(sqlText) };
  }

  /** Runs synchronously; the promises only give both dialects one interface. */
  runner(): SqlRunner {
    return {
      rows: <R>(sqlText: string, params: readonly unknown[]) => Promise.resolve(this.prepare(sqlText).all(...params) as R[]),
      run: (sqlText: string, params: readonly unknown[]) => Promise.resolve(this.prepare(sqlText).run(...params).changes),
    };
  }
}

const pgTexts = new Map<string, string>();

/** `?` -> `$1`, `$2`, ... (the hot statements have no `?` inside literals). */
function pgText(sqlText: string): string {
  let text = pgTexts.get(sqlText);
  if (text === undefined) {
    let n = 0;
    text = sqlText.replace(/\?/g, () => `$${++n}`);
    pgTexts.set(sqlText, text);
  }
  return text;
}

/** PostgreSQL: raw queries on the pool, or inside a Kysely transaction. */
export function pgRunner(db: Kysely<Database> | Transaction<Database>): SqlRunner {
  return {
    rows: async <R>(sqlText: string, params: readonly unknown[]) => (await db.executeQuery<R>(CompiledQuery.raw(pgText(sqlText), [...params]))).rows,
    run: async (sqlText: string, params: readonly unknown[]) => Number((await db.executeQuery(CompiledQuery.raw(pgText(sqlText), [...params]))).numAffectedRows ?? 0n),
  };
}
