/**
 * Executions and their events, on the store's own Kysely instance (same
 * database, same transactions machinery), with the query builder only, so the
 * same code runs on SQLite and PostgreSQL.
 *
 * An execution has one writer: the process that runs it (`owner`). Its events
 * get sequence numbers from that writer, in order; a terminal status and its
 * lifecycle event are committed together, so a reader that sees the terminal
 * status also sees every event before it.
 */
import type { Kysely, Migration, Selectable } from 'kysely';
import type { EventType, Execution, ExecutionEventRecord, ExecutionStatus, OutputTotals } from '../domain/executions.js';
import { ACTIVE_STATUSES } from '../domain/executions.js';
import type { Database } from './schema.js';
import type { Dialect } from './store.js';

export interface ExecutionsTable {
  execution_id: string;
  machine_id: string;
  org_id: string;
  owner: string;
  status: string;
  /** JSON array of strings. */
  command: string;
  cwd: string | null;
  /** JSON array of strings, or null when no env was given. */
  env_keys: string | null;
  timeout_ms: number | null;
  exit_code: number | null;
  signal: number | null;
  error_code: string | null;
  error_message: string | null;
  stdout: string | null;
  stderr: string | null;
  stdout_bytes: number;
  stderr_bytes: number;
  stdout_truncated: number;
  stderr_truncated: number;
  created_at: number;
  started_at: number | null;
  completed_at: number | null;
}

export interface ExecutionEventsTable {
  execution_id: string;
  sequence: number;
  type: string;
  at: number;
  status: string | null;
  chunk: string | null;
  exit_code: number | null;
  signal: number | null;
  error_code: string | null;
  error_message: string | null;
}

// A type alias, not an interface: Kysely's withTables wants an index-signature-compatible record.
export type ExecutionTables = {
  executions: ExecutionsTable;
  execution_events: ExecutionEventsTable;
};

type Db = Kysely<Database & ExecutionTables>;

/** Migration 0002 (registered in migrations.ts). */
export const executionsMigration: Migration = {
  async up(db: Kysely<unknown>) {
    await db.schema
      .createTable('executions')
      .addColumn('execution_id', 'text', (c) => c.primaryKey())
      .addColumn('machine_id', 'text', (c) => c.notNull())
      .addColumn('org_id', 'text', (c) => c.notNull())
      .addColumn('owner', 'text', (c) => c.notNull())
      .addColumn('status', 'text', (c) => c.notNull())
      .addColumn('command', 'text', (c) => c.notNull())
      .addColumn('cwd', 'text')
      .addColumn('env_keys', 'text')
      .addColumn('timeout_ms', 'bigint')
      .addColumn('exit_code', 'integer')
      .addColumn('signal', 'integer')
      .addColumn('error_code', 'text')
      .addColumn('error_message', 'text')
      .addColumn('stdout', 'text')
      .addColumn('stderr', 'text')
      .addColumn('stdout_bytes', 'bigint', (c) => c.notNull())
      .addColumn('stderr_bytes', 'bigint', (c) => c.notNull())
      .addColumn('stdout_truncated', 'integer', (c) => c.notNull())
      .addColumn('stderr_truncated', 'integer', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addColumn('started_at', 'bigint')
      .addColumn('completed_at', 'bigint')
      .execute();
    await db.schema.createIndex('executions_machine').on('executions').columns(['machine_id', 'execution_id']).execute();
    await db.schema.createIndex('executions_owner_status').on('executions').columns(['owner', 'status']).execute();

    await db.schema
      .createTable('execution_events')
      .addColumn('execution_id', 'text', (c) => c.notNull())
      .addColumn('sequence', 'bigint', (c) => c.notNull())
      .addColumn('type', 'text', (c) => c.notNull())
      .addColumn('at', 'bigint', (c) => c.notNull())
      .addColumn('status', 'text')
      .addColumn('chunk', 'text')
      .addColumn('exit_code', 'integer')
      .addColumn('signal', 'integer')
      .addColumn('error_code', 'text')
      .addColumn('error_message', 'text')
      .addPrimaryKeyConstraint('execution_events_pk', ['execution_id', 'sequence'])
      .execute();
  },
};

/** What a status change writes besides the status. */
export interface ExecutionUpdate {
  readonly status: ExecutionStatus;
  readonly startedAt?: number;
  readonly completedAt?: number;
  readonly exitCode?: number | null;
  readonly signal?: number | null;
  readonly errorCode?: string | null;
  readonly errorMessage?: string | null;
  readonly output?: OutputTotals & { readonly stdout: string; readonly stderr: string };
}

export interface ExecutionPage {
  readonly items: Execution[];
  readonly hasMore: boolean;
}

export interface EventPage {
  readonly items: ExecutionEventRecord[];
  readonly hasMore: boolean;
}

export class ExecutionsStore {
  private readonly db: Db;

  constructor(store: { readonly db: Kysely<Database>; readonly dialect: Dialect }) {
    this.db = store.db.withTables<ExecutionTables>();
  }

  async insert(e: Execution, first: ExecutionEventRecord): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      await trx.insertInto('executions').values(executionToRow(e)).execute();
      await trx.insertInto('execution_events').values(eventToRow(first)).execute();
    });
  }

  async get(executionId: string): Promise<Execution | undefined> {
    const row = await this.db.selectFrom('executions').selectAll().where('execution_id', '=', executionId).executeTakeFirst();
    return row === undefined ? undefined : rowToExecution(row);
  }

  /** The kept output of a finished execution (running ones are served from memory). */
  async output(executionId: string): Promise<{ stdout: string; stderr: string } | undefined> {
    const row = await this.db.selectFrom('executions').select(['stdout', 'stderr']).where('execution_id', '=', executionId).executeTakeFirst();
    return row === undefined ? undefined : { stdout: row.stdout ?? '', stderr: row.stderr ?? '' };
  }

  async list(machineId: string, afterId: string | null, limit: number): Promise<ExecutionPage> {
    let q = this.db.selectFrom('executions').selectAll().where('machine_id', '=', machineId);
    if (afterId !== null) q = q.where('execution_id', '>', afterId);
    const rows = await q.orderBy('execution_id').limit(limit + 1).execute();
    return { items: rows.slice(0, limit).map(rowToExecution), hasMore: rows.length > limit };
  }

  async events(executionId: string, afterSequence: number, limit: number): Promise<EventPage> {
    const rows = await this.db
      .selectFrom('execution_events')
      .selectAll()
      .where('execution_id', '=', executionId)
      .where('sequence', '>', afterSequence)
      .orderBy('sequence')
      .limit(limit + 1)
      .execute();
    return { items: rows.slice(0, limit).map(rowToEvent), hasMore: rows.length > limit };
  }

  async appendEvents(events: readonly ExecutionEventRecord[]): Promise<void> {
    if (events.length === 0) return;
    await this.db.insertInto('execution_events').values(events.map(eventToRow)).execute();
  }

  /** A status change and its lifecycle event, in one transaction. */
  async update(executionId: string, u: ExecutionUpdate, event: ExecutionEventRecord): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      await trx.insertInto('execution_events').values(eventToRow(event)).execute();
      await trx.updateTable('executions').set(updateToRow(u)).where('execution_id', '=', executionId).execute();
    });
  }

  /** Executions this owner left unfinished (it died or stopped without finishing them). */
  async listUnfinished(owner: string): Promise<Execution[]> {
    const rows = await this.db
      .selectFrom('executions')
      .selectAll()
      .where('owner', '=', owner)
      .where('status', 'in', [...ACTIVE_STATUSES])
      .execute();
    return rows.map(rowToExecution);
  }

  async lastSequence(executionId: string): Promise<number> {
    const row = await this.db
      .selectFrom('execution_events')
      .select((eb) => eb.fn.max('sequence').as('max'))
      .where('execution_id', '=', executionId)
      .executeTakeFirst();
    return row?.max === null || row?.max === undefined ? 0 : Number(row.max);
  }
}

// --- rows ---

function executionToRow(e: Execution): ExecutionsTable {
  return {
    execution_id: e.executionId,
    machine_id: e.machineId,
    org_id: e.orgId,
    owner: e.owner,
    status: e.status,
    command: JSON.stringify(e.command),
    cwd: e.cwd,
    env_keys: e.envKeys === null ? null : JSON.stringify(e.envKeys),
    timeout_ms: e.timeoutMs,
    exit_code: e.exitCode,
    signal: e.signal,
    error_code: e.errorCode,
    error_message: e.errorMessage,
    stdout: null,
    stderr: null,
    stdout_bytes: e.stdoutBytes,
    stderr_bytes: e.stderrBytes,
    stdout_truncated: e.stdoutTruncated ? 1 : 0,
    stderr_truncated: e.stderrTruncated ? 1 : 0,
    created_at: e.createdAt,
    started_at: e.startedAt,
    completed_at: e.completedAt,
  };
}

function updateToRow(u: ExecutionUpdate): Partial<ExecutionsTable> {
  const set: Partial<ExecutionsTable> = { status: u.status };
  if (u.startedAt !== undefined) set.started_at = u.startedAt;
  if (u.completedAt !== undefined) set.completed_at = u.completedAt;
  if (u.exitCode !== undefined) set.exit_code = u.exitCode;
  if (u.signal !== undefined) set.signal = u.signal;
  if (u.errorCode !== undefined) set.error_code = u.errorCode;
  if (u.errorMessage !== undefined) set.error_message = u.errorMessage;
  if (u.output !== undefined) {
    set.stdout = u.output.stdout;
    set.stderr = u.output.stderr;
    set.stdout_bytes = u.output.stdoutBytes;
    set.stderr_bytes = u.output.stderrBytes;
    set.stdout_truncated = u.output.stdoutTruncated ? 1 : 0;
    set.stderr_truncated = u.output.stderrTruncated ? 1 : 0;
  }
  return set;
}

function rowToExecution(r: Selectable<ExecutionsTable>): Execution {
  return {
    executionId: r.execution_id,
    machineId: r.machine_id,
    orgId: r.org_id,
    owner: r.owner,
    status: r.status as ExecutionStatus,
    command: JSON.parse(r.command) as string[],
    cwd: r.cwd,
    envKeys: r.env_keys === null ? null : (JSON.parse(r.env_keys) as string[]),
    timeoutMs: r.timeout_ms === null ? null : Number(r.timeout_ms),
    exitCode: r.exit_code,
    signal: r.signal,
    errorCode: r.error_code,
    errorMessage: r.error_message,
    stdoutBytes: Number(r.stdout_bytes),
    stderrBytes: Number(r.stderr_bytes),
    stdoutTruncated: r.stdout_truncated === 1,
    stderrTruncated: r.stderr_truncated === 1,
    createdAt: Number(r.created_at),
    startedAt: r.started_at === null ? null : Number(r.started_at),
    completedAt: r.completed_at === null ? null : Number(r.completed_at),
  };
}

function eventToRow(e: ExecutionEventRecord): ExecutionEventsTable {
  return {
    execution_id: e.executionId,
    sequence: e.sequence,
    type: e.type,
    at: e.at,
    status: e.status,
    chunk: e.chunk,
    exit_code: e.exitCode,
    signal: e.signal,
    error_code: e.errorCode,
    error_message: e.errorMessage,
  };
}

function rowToEvent(r: Selectable<ExecutionEventsTable>): ExecutionEventRecord {
  return {
    executionId: r.execution_id,
    sequence: Number(r.sequence),
    type: r.type as EventType,
    at: Number(r.at),
    status: r.status as ExecutionStatus | null,
    chunk: r.chunk,
    exitCode: r.exit_code,
    signal: r.signal,
    errorCode: r.error_code,
    errorMessage: r.error_message,
  };
}
