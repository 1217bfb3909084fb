/**
 * A real Hangar server for tests: real HTTP on an ephemeral port, a real
 * store (SQLite in a temp dir, or PostgreSQL, see store-target.ts), the
 * simulated runtime unless a test passes another.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { loadConfig } from '../../src/config.js';
import type { Runtime } from '../../src/runtime/runtime.js';
import { createSimRuntime } from '../../src/runtime/select.js';
import type { SimRuntime } from '../../src/runtime/sim/sim-runtime.js';
import type { Hangar } from '../../src/server.js';
import { startHangar } from '../../src/server.js';
import type { Sizes } from '../../src/domain/types.js';
import { allocationsByHost } from '../../src/domain/placement.js';
import { rowToMachine } from '../../src/store/rows.js';
import type { SqlStore } from '../../src/store/sql-store.js';
import type { TestDatabase } from './store-target.js';
import { createTestDatabase } from './store-target.js';

export interface TestServer {
  readonly url: string;
  readonly adminKey: string;
  readonly orgId: string;
  readonly hangar: Hangar;
  readonly sim: SimRuntime | undefined;
  readonly dataDir: string;
  readonly databaseUrl: string | undefined;
  close(): Promise<void>;
}

export interface TestServerOptions {
  /** HANGAR_* settings without the prefix, e.g. { SIM_HOSTS: '1x2/2048/20' }. */
  readonly env?: Record<string, string>;
  readonly runtime?: Runtime;
  /** Reuse a data dir / database (restart tests). */
  readonly dataDir?: string;
  readonly database?: TestDatabase | null;
}

export function tempDir(prefix = 'hangar-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export async function startTestServer(opts: TestServerOptions = {}): Promise<TestServer> {
  const dataDir = opts.dataDir ?? tempDir();
  const database = opts.database === undefined ? await createTestDatabase() : opts.database;
  const env: Record<string, string> = {
    HANGAR_PORT: '0',
    HANGAR_HOST: '127.0.0.1',
    HANGAR_DATA_DIR: dataDir,
    HANGAR_RUNTIME: 'sim',
    HANGAR_SIM_LATENCY_MS: '1',
    HANGAR_LOG_LEVEL: 'silent',
    HANGAR_RESYNC_INTERVAL: '1s',
    HANGAR_BACKOFF_BASE_MS: '20',
    HANGAR_BACKOFF_CAP_MS: '200',
    ...(database !== null ? { HANGAR_DATABASE_URL: database.url } : {}),
  };
  for (const [k, v] of Object.entries(opts.env ?? {})) env[`HANGAR_${k}`] = v;
  const config = loadConfig(env);
  const sim = opts.runtime === undefined ? createSimRuntime(config) : undefined;
  const hangar = await startHangar(config, { log: pino({ level: 'silent' }), runtime: opts.runtime ?? sim });
  const adminKey = hangar.adminKey ?? (await readAdminKey(dataDir));
  const keys = await hangar.store.listApiKeys();
  const orgId = keys.find((k) => k.scope === 'admin')!.orgId;
  return {
    url: hangar.url,
    adminKey,
    orgId,
    hangar,
    sim,
    dataDir,
    databaseUrl: database?.url,
    async close() {
      await hangar.close();
      if (opts.dataDir === undefined) rmSync(dataDir, { recursive: true, force: true });
      if (opts.database === undefined) await database?.drop();
    },
  };
}

async function readAdminKey(dataDir: string): Promise<string> {
  const { readFile } = await import('node:fs/promises');
  return (await readFile(join(dataDir, 'admin.key'), 'utf8')).trim();
}

/** Each host's stored allocation totals next to the same totals recomputed from every machine. */
export async function allocationTotals(server: TestServer): Promise<{ stored: Record<string, Sizes>; derived: Record<string, Sizes> }> {
  const store = server.hangar.store as SqlStore;
  const hosts = await store.db.selectFrom('hosts').selectAll().execute();
  const machines = await store.db.selectFrom('machines').selectAll().execute();
  const derived = allocationsByHost(machines.map(rowToMachine), null);
  const zero = { vcpu: 0, memoryMib: 0, storageGib: 0 };
  return {
    stored: Object.fromEntries(hosts.map((h) => [h.host_id, { vcpu: h.allocated_vcpu, memoryMib: h.allocated_memory_mib, storageGib: h.allocated_storage_gib }])),
    derived: Object.fromEntries(hosts.map((h) => [h.host_id, derived.get(h.host_id) ?? zero])),
  };
}
