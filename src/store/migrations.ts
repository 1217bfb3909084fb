/**
 * Schema migrations, shared by SQLite and PostgreSQL. Append only: a released
 * migration is never edited. Kysely's migrator takes a lock (an advisory lock
 * on PostgreSQL), so replicas starting together migrate once.
 */
import type { Kysely, Migration, MigrationProvider } from 'kysely';
import { sql } from 'kysely';
import { executionsMigration } from './executions-store.js';

const initial: Migration = {
  async up(db: Kysely<unknown>) {
    await db.schema
      .createTable('orgs')
      .addColumn('org_id', 'text', (c) => c.primaryKey())
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .execute();

    await db.schema
      .createTable('api_keys')
      .addColumn('key_id', 'text', (c) => c.primaryKey())
      .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.org_id'))
      .addColumn('key_hash', 'text', (c) => c.notNull().unique())
      .addColumn('prefix', 'text', (c) => c.notNull())
      .addColumn('scope', 'text', (c) => c.notNull())
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addColumn('revoked_at', 'bigint')
      .execute();

    await db.schema
      .createTable('counters')
      .addColumn('name', 'text', (c) => c.primaryKey())
      .addColumn('value', 'bigint', (c) => c.notNull())
      .execute();
    await sql`insert into counters (name, value) values ('revision', 0)`.execute(db);

    await db.schema
      .createTable('machines')
      .addColumn('machine_id', 'text', (c) => c.primaryKey())
      .addColumn('org_id', 'text', (c) => c.notNull())
      .addColumn('vcpu', 'double precision', (c) => c.notNull())
      .addColumn('memory_mib', 'bigint', (c) => c.notNull())
      .addColumn('storage_gib', 'bigint', (c) => c.notNull())
      .addColumn('autosleep_seconds', 'bigint', (c) => c.notNull())
      .addColumn('desired_state', 'text', (c) => c.notNull())
      .addColumn('phase', 'text', (c) => c.notNull())
      .addColumn('reason', 'text', (c) => c.notNull())
      .addColumn('retryable', 'integer', (c) => c.notNull())
      .addColumn('last_error', 'text')
      .addColumn('revision', 'bigint', (c) => c.notNull())
      .addColumn('last_transition_at', 'bigint', (c) => c.notNull())
      .addColumn('last_progress_at', 'bigint', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addColumn('host_id', 'text')
      .addColumn('applied_vcpu', 'double precision')
      .addColumn('applied_memory_mib', 'bigint')
      .addColumn('applied_storage_gib', 'bigint')
      .addColumn('attempts', 'integer', (c) => c.notNull())
      .addColumn('next_attempt_at', 'bigint')
      .addColumn('last_activity_at', 'bigint', (c) => c.notNull())
      .addColumn('destroyed_at', 'bigint')
      .addColumn('log_compacted_revision', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('owner', 'text')
      .addColumn('lease_until', 'bigint')
      .execute();
    await db.schema.createIndex('machines_org').on('machines').columns(['org_id', 'machine_id']).execute();
    await db.schema.createIndex('machines_state').on('machines').columns(['desired_state', 'phase']).execute();

    await db.schema
      .createTable('events')
      .addColumn('revision', 'bigint', (c) => c.primaryKey())
      .addColumn('machine_id', 'text', (c) => c.notNull())
      .addColumn('org_id', 'text', (c) => c.notNull())
      .addColumn('phase', 'text', (c) => c.notNull())
      .addColumn('body', 'text', (c) => c.notNull())
      .addColumn('ends_stream', 'integer', (c) => c.notNull())
      .addColumn('committed_at', 'bigint', (c) => c.notNull())
      .execute();
    await db.schema.createIndex('events_machine').on('events').columns(['machine_id', 'revision']).execute();

    await db.schema
      .createTable('hosts')
      .addColumn('host_id', 'text', (c) => c.primaryKey())
      .addColumn('vcpu', 'double precision', (c) => c.notNull())
      .addColumn('memory_mib', 'bigint', (c) => c.notNull())
      .addColumn('storage_gib', 'bigint', (c) => c.notNull())
      .addColumn('ready', 'integer', (c) => c.notNull())
      .addColumn('updated_at', 'bigint', (c) => c.notNull())
      .execute();

    await db.schema
      .createTable('idempotency_keys')
      .addColumn('org_id', 'text', (c) => c.notNull())
      .addColumn('idem_key', 'text', (c) => c.notNull())
      .addColumn('request_hash', 'text', (c) => c.notNull())
      .addColumn('state', 'text', (c) => c.notNull())
      .addColumn('status_code', 'integer')
      .addColumn('headers', 'text')
      .addColumn('body', 'text')
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addColumn('locked_until', 'bigint', (c) => c.notNull())
      .addPrimaryKeyConstraint('idempotency_keys_pk', ['org_id', 'idem_key'])
      .execute();
    await db.schema.createIndex('idempotency_keys_created').on('idempotency_keys').column('created_at').execute();
  },
};

/**
 * Per-host allocation totals, so placement reads one row per host instead of
 * summing every placed machine (quadratic in the number of machines).
 */
const hostAllocations: Migration = {
  async up(db: Kysely<unknown>) {
    for (const column of ['allocated_vcpu', 'allocated_memory_mib', 'allocated_storage_gib']) {
      await db.schema
        .alterTable('hosts')
        .addColumn(column, column === 'allocated_vcpu' ? 'double precision' : 'bigint', (c) => c.notNull().defaultTo(0))
        .execute();
    }
    // Backfill from the machines already placed (same rules as domain/placement.ts allocationOf).
    await sql`
      update hosts set
        allocated_vcpu = coalesce((select sum(vcpu) from machines m where m.host_id = hosts.host_id and m.phase in ('starting', 'running', 'stopping')), 0),
        allocated_memory_mib = coalesce((select sum(memory_mib) from machines m where m.host_id = hosts.host_id and m.phase in ('starting', 'running', 'stopping')), 0),
        allocated_storage_gib = coalesce((select sum(storage_gib) from machines m where m.host_id = hosts.host_id and m.phase <> 'destroyed'), 0)
    `.execute(db);
  },
};

export const MIGRATIONS: Record<string, Migration> = {
  '0001_initial': initial,
  '0002_executions': executionsMigration,
  '0003_host_allocations': hostAllocations,
};

export const migrationProvider: MigrationProvider = {
  getMigrations: async () => MIGRATIONS,
};
