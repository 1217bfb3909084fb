/**
 * Configuration: parsed once from flags and the environment (flags win),
 * validated, frozen, and passed explicitly. Every knob is listed in the
 * README's configuration table.
 */
import { resolve } from 'node:path';
import { durationSeconds } from './domain/durations.js';

export type RuntimeChoice = 'auto' | 'sim' | 'local';
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface Config {
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  /** PostgreSQL URL; undefined: embedded SQLite at `<dataDir>/hangar.db`. */
  readonly databaseUrl: string | undefined;
  readonly runtime: RuntimeChoice;
  readonly logLevel: LogLevel;
  readonly sim: {
    readonly latencyMs: number;
    readonly hosts: string;
    readonly failureRate: number;
    readonly failureRetryable: boolean;
    readonly hostLossRate: number;
  };
  readonly local: {
    readonly stateDir: string;
    readonly reserveVcpu: number;
    readonly reserveMemoryMib: number;
    readonly reserveStorageGib: number;
    /** Sandboxes kept booted ahead of time so a new machine starts without booting; 0: off. */
    readonly poolSize: number;
  };
  readonly api: {
    readonly bodyLimitBytes: number;
    readonly defaultAutosleepSeconds: number;
    readonly authCacheMs: number;
    readonly idempotencyLeaseMs: number;
  };
  readonly stream: {
    readonly bookmarkIntervalMs: number;
    readonly retryMs: number;
    readonly watcherBufferBytes: number;
  };
  readonly reconciler: {
    readonly workers: number;
    readonly resyncMs: number;
    readonly backoffBaseMs: number;
    readonly backoffCapMs: number;
    readonly runtimeTimeoutMs: number;
    /** PostgreSQL mode: how long a replica's claim on a machine lasts without renewal. */
    readonly leaseTtlMs: number;
  };
  readonly retention: {
    readonly destroyedMs: number;
    readonly eventsPerMachine: number;
    readonly eventsMaxAgeMs: number;
    readonly idempotencyMs: number;
    readonly maintenanceIntervalMs: number;
  };
  readonly executions: {
    readonly outputLimitBytes: number;
    readonly stdinLimitBytes: number;
  };
  /** Name of this process among replicas sharing one PostgreSQL. */
  readonly replicaId: string | undefined;
}

/** Flag names are the env names without HANGAR_, lower-cased, `_` as `-` (e.g. --sim-latency-ms). */
export type Flags = Readonly<Record<string, string | undefined>>;

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, flags: Flags = {}): Config {
  const get = (name: string): string | undefined => {
    const flag = flags[name.toLowerCase().replace(/_/g, '-')];
    if (flag !== undefined) return flag;
    const value = env[`HANGAR_${name}`];
    return value === undefined || value === '' ? undefined : value;
  };
  const str = (name: string, fallback: string): string => get(name) ?? fallback;
  const int = (name: string, fallback: number, min = 0, max = Number.MAX_SAFE_INTEGER): number => {
    const raw = get(name);
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      throw new ConfigError(`HANGAR_${name}: "${raw}" must be an integer from ${min} to ${max}`);
    }
    return n;
  };
  const num = (name: string, fallback: number, min: number, max: number): number => {
    const raw = get(name);
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min || n > max) throw new ConfigError(`HANGAR_${name}: "${raw}" must be a number from ${min} to ${max}`);
    return n;
  };
  const bool = (name: string, fallback: boolean): boolean => {
    const raw = get(name);
    if (raw === undefined) return fallback;
    if (/^(1|true|yes|on)$/i.test(raw)) return true;
    if (/^(0|false|no|off)$/i.test(raw)) return false;
    throw new ConfigError(`HANGAR_${name}: "${raw}" must be true or false`);
  };
  const seconds = (name: string, fallback: string): number => {
    try {
      return durationSeconds(get(name) ?? fallback, `HANGAR_${name}`);
    } catch (err) {
      throw new ConfigError((err as Error).message);
    }
  };
  const oneOf = <T extends string>(name: string, allowed: readonly T[], fallback: T): T => {
    const raw = get(name) ?? fallback;
    if (!(allowed as readonly string[]).includes(raw)) throw new ConfigError(`HANGAR_${name}: "${raw}" must be one of ${allowed.join(', ')}`);
    return raw as T;
  };

  const dataDir = resolve(str('DATA_DIR', './data'));
  const config: Config = {
    host: str('HOST', '127.0.0.1'),
    port: int('PORT', 8080, 0, 65535),
    dataDir,
    databaseUrl: get('DATABASE_URL'),
    runtime: oneOf<RuntimeChoice>('RUNTIME', ['auto', 'sim', 'local'], 'auto'),
    logLevel: oneOf<LogLevel>('LOG_LEVEL', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], 'info'),
    sim: {
      latencyMs: int('SIM_LATENCY_MS', 5, 0, 600_000),
      hosts: str('SIM_HOSTS', '4x64/262144/10000'),
      failureRate: num('SIM_FAILURE_RATE', 0, 0, 1),
      failureRetryable: bool('SIM_FAILURE_RETRYABLE', true),
      hostLossRate: num('SIM_HOST_LOSS_RATE', 0, 0, 1),
    },
    local: {
      stateDir: resolve(str('LOCAL_STATE_DIR', `${dataDir}/local`)),
      reserveVcpu: num('LOCAL_RESERVE_VCPU', 0.5, 0, 4096),
      reserveMemoryMib: int('LOCAL_RESERVE_MEMORY_MIB', 1024),
      reserveStorageGib: int('LOCAL_RESERVE_STORAGE_GIB', 5),
      poolSize: int('LOCAL_POOL_SIZE', 2, 0, 64),
    },
    api: {
      bodyLimitBytes: int('BODY_LIMIT_BYTES', 1024 * 1024, 1024),
      defaultAutosleepSeconds: seconds('DEFAULT_AUTOSLEEP', '300'),
      authCacheMs: int('AUTH_CACHE_MS', 5000),
      idempotencyLeaseMs: int('IDEMPOTENCY_LEASE_MS', 60_000, 1000),
    },
    stream: {
      bookmarkIntervalMs: int('BOOKMARK_INTERVAL_MS', 15_000, 10),
      retryMs: int('SSE_RETRY_MS', 1000, 0),
      watcherBufferBytes: int('WATCHER_BUFFER_BYTES', 256 * 1024, 1024),
    },
    reconciler: {
      workers: int('RECONCILE_WORKERS', 32, 1, 4096),
      resyncMs: seconds('RESYNC_INTERVAL', '10s') * 1000,
      backoffBaseMs: int('BACKOFF_BASE_MS', 250, 1),
      backoffCapMs: int('BACKOFF_CAP_MS', 30_000, 1),
      runtimeTimeoutMs: int('RUNTIME_TIMEOUT_MS', 60_000, 10),
      leaseTtlMs: int('LEASE_TTL_MS', 5000, 100),
    },
    retention: {
      destroyedMs: seconds('DESTROYED_RETENTION', '24h') * 1000,
      eventsPerMachine: int('EVENT_RETENTION_COUNT', 1000, 1),
      eventsMaxAgeMs: seconds('EVENT_RETENTION_AGE', '24h') * 1000,
      idempotencyMs: seconds('IDEMPOTENCY_RETENTION', '24h') * 1000,
      maintenanceIntervalMs: int('MAINTENANCE_INTERVAL_MS', 60_000, 10),
    },
    executions: {
      outputLimitBytes: int('EXEC_OUTPUT_LIMIT_BYTES', 1024 * 1024, 0),
      stdinLimitBytes: int('EXEC_STDIN_LIMIT_BYTES', 256 * 1024, 0),
    },
    replicaId: get('REPLICA_ID'),
  };
  if (config.reconciler.resyncMs <= 0) throw new ConfigError('HANGAR_RESYNC_INTERVAL must be positive');
  return deepFreeze(config);
}

function deepFreeze<T extends object>(value: T): T {
  for (const v of Object.values(value)) if (typeof v === 'object' && v !== null) deepFreeze(v);
  return Object.freeze(value);
}
