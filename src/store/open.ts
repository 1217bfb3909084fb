/** Opens the configured store: embedded SQLite by default, PostgreSQL when a URL is given. */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, SqliteDialect } from 'kysely';
import { PostgresJSDialect } from 'kysely-postgres-js';
import postgres from 'postgres';
import type { Database } from './schema.js';
import { EVENTS_CHANNEL, migrate, SqlStore } from './sql-store.js';
import type { RemoteCommits } from './store.js';

export type StoreTarget = { readonly kind: 'sqlite'; readonly path: string } | { readonly kind: 'postgres'; readonly url: string };

export interface OpenStoreOptions {
  readonly clock?: () => number;
  /** Run migrations (the server does; read-only tools may not need to). */
  readonly migrate?: boolean;
  readonly poolSize?: number;
}

export async function openStore(target: StoreTarget, opts: OpenStoreOptions = {}): Promise<SqlStore> {
  const store = target.kind === 'sqlite' ? openSqlite(target.path, opts) : openPostgres(target.url, opts);
  if (opts.migrate !== false) await migrate(store.db);
  return store.store;
}

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
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: handle }) });
  return { db, store: new SqlStore({ dialect: 'sqlite', db, ...(opts.clock ? { clock: opts.clock } : {}) }) };
}

const INT8_OID = 20;

function openPostgres(url: string, opts: OpenStoreOptions): { db: Kysely<Database>; store: SqlStore } {
  const options = {
    max: opts.poolSize ?? 10,
    onnotice: () => undefined,
    // Revisions and times are int8; they stay below 2^53, so plain numbers are exact.
    types: {
      bigint: { to: INT8_OID, from: [INT8_OID], serialize: (x: number) => String(x), parse: (x: string) => Number(x) },
    },
  };
  const client = postgres(url, options);
  const db = new Kysely<Database>({ dialect: new PostgresJSDialect({ postgres: client }) });
  // LISTEN needs a connection of its own; postgres.js re-listens after a reconnect and calls onListen again.
  let listener: ReturnType<typeof postgres> | null = null;
  const remoteCommits: RemoteCommits = {
    async listen(onRevision, onListen) {
      listener ??= postgres(url, { ...options, max: 1 });
      const sub = await listener.listen(EVENTS_CHANNEL, (payload) => onRevision(Number(payload)), onListen);
      return async () => sub.unlisten();
    },
  };
  const store = new SqlStore({
    dialect: 'postgres',
    db,
    remoteCommits,
    ...(opts.clock ? { clock: opts.clock } : {}),
    onClose: async () => {
      await listener?.end({ timeout: 1 });
    },
  });
  return { db, store };
}
