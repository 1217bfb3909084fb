/** Opens the configured store: embedded SQLite by default, PostgreSQL when a URL is given. */
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, PostgresDialect, SqliteDialect } from 'kysely';
import pg from 'pg';
import { SqliteStatements } from './hot-sql.js';
import { SqliteCheckpointer } from './sqlite-checkpointer.js';
import type { Database } from './schema.js';
import { EVENTS_CHANNEL, migrate, SqlStore } from './sql-store.js';
import type { RemoteCommits } from './store.js';
import type { Config } from '../config.js';

export type StoreTarget = { readonly kind: 'sqlite'; readonly path: string } | { readonly kind: 'postgres'; readonly url: string };

/** The configured store: PostgreSQL when a URL is given, else `<dataDir>/hangar.db`. */
export function storeTargetOf(config: Pick<Config, 'databaseUrl' | 'dataDir'>): StoreTarget {
  return config.databaseUrl !== undefined ? { kind: 'postgres', url: config.databaseUrl } : { kind: 'sqlite', path: join(config.dataDir, 'hangar.db') };
}

export interface OpenStoreOptions {
  readonly clock?: () => number;
  /** Run migrations (the server does; read-only tools may not need to). */
  readonly migrate?: boolean;
  readonly poolSize?: number;
  /**
   * SQLite: checkpoint on a thread of its own (the server). Short-lived users
   * (`hangar keys`, first-start setup) leave it to SQLite and start no thread.
   */
  readonly checkpointThread?: boolean;
  /** Problems worth a log line that do not fail anything (a background checkpoint that failed). */
  readonly onWarning?: (message: string) => void;
}

export async function openStore(target: StoreTarget, opts: OpenStoreOptions = {}): Promise<SqlStore> {
  const store = target.kind === 'sqlite' ? openSqlite(target.path, opts) : openPostgres(target.url, opts);
  if (opts.migrate !== false) await migrate(store.db);
  return store.store;
}

/**
 * SQLite's own checkpoint, inside a COMMIT on the event loop, only as a
 * backstop (16 MiB of WAL): the checkpoint thread normally keeps the WAL far
 * below it. At SQLite's default (1,000 pages) it still fired about once a
 * second under load, each time a 5-8 ms stall.
 */
const AUTOCHECKPOINT_PAGES = 4_000;

function openSqlite(path: string, opts: OpenStoreOptions): { db: Kysely<Database>; store: SqlStore } {
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
  const handle = new BetterSqlite3(path);
  // WAL + NORMAL: a killed process loses no committed transaction (the WAL is
  // fsynced at checkpoints; only an OS crash or power loss can drop the newest).
  handle.pragma('journal_mode = WAL');
  handle.pragma('synchronous = NORMAL');
  // The CLI (`hangar keys ...`) may write while the server runs.
  handle.pragma('busy_timeout = 5000');
  handle.pragma('foreign_keys = ON');
  // Checkpoints mostly run on a thread of their own (sqlite-checkpointer.ts), not inside our COMMITs.
  const checkpointer = path === ':memory:' || opts.checkpointThread !== true ? null : new SqliteCheckpointer(path, { onError: (message) => opts.onWarning?.(`SQLite checkpoint failed: ${message}`) });
  if (checkpointer !== null) handle.pragma(`wal_autocheckpoint = ${AUTOCHECKPOINT_PAGES}`);
  const statements = new SqliteStatements(handle);
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: statements.forKysely() }) });
  return {
    db,
    store: new SqlStore({
      dialect: 'sqlite',
      db,
      sqlite: statements,
      ...(opts.clock ? { clock: opts.clock } : {}),
      ...(checkpointer !== null ? { onClose: () => checkpointer.stop() } : {}),
    }),
  };
}

const INT8_OID = 20;

/** Revisions and times are int8; they stay below 2^53, so plain numbers are exact. */
const pgTypes = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID ? (value: string) => Number(value) : pg.types.getTypeParser(oid, format)) as pg.CustomTypesConfig['getTypeParser'],
};

function openPostgres(url: string, opts: OpenStoreOptions): { db: Kysely<Database>; store: SqlStore } {
  const pool = new pg.Pool({ connectionString: url, max: opts.poolSize ?? 10, types: pgTypes });
  // A connection that dies (a database restart) must not take the process down: idle ones are dropped
  // by the pool ('error' on the pool); a checked-out one has no pool listener (pg-pool removes it while
  // the client is out), so each client gets its own. The query in flight still rejects, and the pool
  // discards the broken client when it comes back.
  pool.on('error', () => undefined);
  pool.on('connect', (client) => client.on('error', () => undefined));
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  const notifications = new PgNotifications(url);
  const store = new SqlStore({
    dialect: 'postgres',
    db,
    remoteCommits: notifications,
    ...(opts.clock ? { clock: opts.clock } : {}),
    onClose: () => notifications.close(),
  });
  return { db, store };
}

const LISTEN_RETRY_MS = 250;
const LISTEN_RETRY_CAP_MS = 5000;

/**
 * LISTEN on a connection of its own, re-established after it drops. Every
 * (re)subscription calls `onListen`, because notifications sent while it was
 * down are lost and the caller must catch up from the event log.
 */
class PgNotifications implements RemoteCommits {
  private client: pg.Client | null = null;
  private stopped = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private failures = 0;

  constructor(private readonly url: string) {}

  async listen(onRevision: (revision: number) => void, onListen: () => void): Promise<() => Promise<void>> {
    const connect = async (): Promise<void> => {
      const client = new pg.Client({ connectionString: this.url, types: pgTypes });
      let lost = false;
      const reconnect = () => {
        if (lost) return;
        lost = true;
        client.removeAllListeners('notification');
        void client.end().catch(() => undefined);
        if (this.client === client) this.client = null;
        if (this.stopped) return;
        const delay = Math.min(LISTEN_RETRY_CAP_MS, LISTEN_RETRY_MS * 2 ** Math.min(this.failures++, 5));
        // A failed attempt schedules the next one itself (the catch in connect).
        this.retryTimer = setTimeout(() => void connect().catch(() => undefined), delay);
      };
      client.on('error', reconnect);
      client.on('end', reconnect);
      client.on('notification', (msg) => {
        if (msg.channel === EVENTS_CHANNEL && msg.payload !== undefined) onRevision(Number(msg.payload));
      });
      try {
        await client.connect();
        await client.query(`LISTEN ${EVENTS_CHANNEL}`);
      } catch (err) {
        reconnect();
        throw err;
      }
      this.client = client;
      this.failures = 0;
      onListen();
    };
    await connect();
    return () => this.close();
  }

  async close(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    const client = this.client;
    this.client = null;
    await client?.end().catch(() => undefined);
  }
}
