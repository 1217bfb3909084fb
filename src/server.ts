/**
 * The composition root: opens the store, picks the runtime, starts the change
 * feed, the reconciler and housekeeping, and serves the API. `close()` stops
 * them in reverse order (streams get an error frame first).
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { pino } from 'pino';
import { createApiKey } from './api/api-keys.js';
import { buildApp } from './api/app.js';
import { Metrics } from './api/metrics.js';
import { registerExecutionRoutes } from './api/routes/executions.js';
import type { Config } from './config.js';
import { ChangeFeed } from './events/change-feed.js';
import { ExecutionService } from './executions/service.js';
import { Maintenance } from './reconciler/maintenance.js';
import { LeaseKeeper } from './reconciler/leases.js';
import { Reconciler } from './reconciler/reconciler.js';
import type { Runtime } from './runtime/runtime.js';
import { createRuntime } from './runtime/select.js';
import { openStore, storeTargetOf } from './store/open.js';
import type { Store } from './store/store.js';

export interface Hangar {
  readonly config: Config;
  readonly app: FastifyInstance;
  readonly store: Store;
  readonly runtime: Runtime;
  readonly feed: ChangeFeed;
  readonly reconciler: Reconciler;
  readonly log: Logger;
  /** Base URL the API listens on. */
  readonly url: string;
  /** The admin key, when this start created it. */
  readonly adminKey: string | undefined;
  close(): Promise<void>;
}

export interface StartOptions {
  readonly log?: Logger;
  /** Use this runtime instead of the configured one (tests). */
  readonly runtime?: Runtime;
  readonly listen?: boolean;
}

export function adminKeyPath(config: Config): string {
  return join(config.dataDir, 'admin.key');
}

/** First start: an organisation and an admin key, written to `<dataDir>/admin.key` (mode 600). */
async function bootstrapAdminKey(store: Store, config: Config, log: Logger): Promise<string | undefined> {
  if ((await store.countApiKeys()) > 0 || !(await store.claimOnce('bootstrap-admin-key'))) return undefined;
  const orgId = randomUUID();
  const { key } = await createApiKey(store, { orgId, scope: 'admin', name: 'admin (first start)' });
  mkdirSync(config.dataDir, { recursive: true });
  const path = adminKeyPath(config);
  writeFileSync(path, `${key}\n`, { mode: 0o600 });
  log.info({ orgId, path }, `created organisation ${orgId} and an admin API key; the key is in ${path}`);
  return key;
}

/** Opens the store once (migrations, first-start admin key) and closes it: the primary of `serve --replicas` does this before forking. */
export async function initialiseStore(config: Config, log: Logger): Promise<string | undefined> {
  const store = await openStore(storeTargetOf(config));
  try {
    return await bootstrapAdminKey(store, config, log);
  } finally {
    await store.close();
  }
}

export async function startHangar(config: Config, opts: StartOptions = {}): Promise<Hangar> {
  const log = opts.log ?? pino({ level: config.logLevel, base: { service: 'hangar', ...(config.replicaId ? { replica: config.replicaId } : {}) } });
  const store = await openStore(storeTargetOf(config), { checkpointThread: true, onWarning: (message) => log.warn(message) });
  const cleanups: (() => Promise<void>)[] = [() => store.close()];
  const closeAll = async () => {
    for (const c of cleanups.reverse()) await c().catch((err: unknown) => log.warn({ err }, 'shutdown step failed'));
  };
  try {
    const adminKey = await bootstrapAdminKey(store, config, log);
    const runtime = opts.runtime ?? (await createRuntime(config, log));
    cleanups.push(() => runtime.close());

    const feed = new ChangeFeed(store, {
      onHealth: (healthy, err) => (healthy ? log.info('event log readable again') : log.error({ err }, 'cannot read the event log')),
    });
    await feed.start();
    cleanups.push(() => feed.stop());

    const metrics = new Metrics();
    // Replicas share a PostgreSQL: each machine is driven by the replica holding its lease.
    const leases =
      store.dialect === 'postgres'
        ? new LeaseKeeper({
            store,
            owner: config.replicaId ?? `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`,
            ttlMs: config.reconciler.leaseTtlMs,
            log,
          })
        : undefined;
    const reconciler = new Reconciler({
      store,
      runtime,
      feed,
      log: log.child({ component: 'reconciler' }),
      backoff: { baseMs: config.reconciler.backoffBaseMs, capMs: config.reconciler.backoffCapMs },
      workers: config.reconciler.workers,
      resyncMs: config.reconciler.resyncMs,
      runtimeTimeoutMs: config.reconciler.runtimeTimeoutMs,
      ...(leases !== undefined ? { leases } : {}),
    });
    metrics.gauge('hangar_reconcile_queue_length', 'Machines waiting for the reconciler', () => reconciler.queueLength);
    metrics.gauge('hangar_store_revision', 'Latest revision delivered by the change feed', () => feed.dispatchedRevision);

    const executions = new ExecutionService({
      store,
      feed,
      runtime,
      log: log.child({ component: 'executions' }),
      outputLimitBytes: config.executions.outputLimitBytes,
      owner: config.replicaId ?? 'default',
    });
    await executions.start();
    cleanups.push(() => executions.stop());

    const { app } = await buildApp({
      config,
      store,
      feed,
      runtime,
      log,
      metrics,
      ...(leases !== undefined ? { leaseOwner: { owner: leases.owner, ttlMs: config.reconciler.leaseTtlMs } } : {}),
      extraRoutes: (a) => registerExecutionRoutes(a, { store, service: executions, stdinLimitBytes: config.executions.stdinLimitBytes }),
    });
    await reconciler.start();
    cleanups.push(() => reconciler.stop());

    const maintenance = new Maintenance({
      store,
      log,
      intervalMs: config.retention.maintenanceIntervalMs,
      destroyedRetentionMs: config.retention.destroyedMs,
      idempotencyRetentionMs: config.retention.idempotencyMs,
      compaction: { keepPerMachine: config.retention.eventsPerMachine, maxAgeMs: config.retention.eventsMaxAgeMs },
    });
    maintenance.start();
    cleanups.push(() => maintenance.stop());

    let url = '';
    if (opts.listen !== false) {
      url = await app.listen({ host: config.host, port: config.port });
      log.info({ url, store: store.dialect, runtime: runtime.kind }, `Hangar listening on ${url}`);
    }
    // Streams end (with an error frame) and requests drain before anything below the API stops.
    cleanups.push(() => app.close());

    let closing: Promise<void> | null = null;
    return {
      config,
      app,
      store,
      runtime,
      feed,
      reconciler,
      log,
      url,
      adminKey,
      close: () => (closing ??= closeAll()),
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}
