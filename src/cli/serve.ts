/**
 * `hangar serve`: runs the controlplane until SIGTERM/SIGINT, then shuts down
 * gracefully. With `--replicas N` (PostgreSQL only) it runs N replica
 * processes behind one port (node:cluster), since one process holds at most
 * about 20,000 connections here.
 */
import cluster from 'node:cluster';
import type { Command } from 'commander';
import { pino } from 'pino';
import type { Config } from '../config.js';
import { ConfigError, loadConfig } from '../config.js';
import { initialiseStore, startHangar } from '../server.js';

/** Every serve flag maps to a HANGAR_* variable (flag wins). */
const SERVE_FLAGS: [flag: string, env: string, help: string][] = [
  ['--host <host>', 'HOST', 'address to listen on (default 127.0.0.1)'],
  ['--port <port>', 'PORT', 'port to listen on (default 8080)'],
  ['--data-dir <dir>', 'DATA_DIR', 'where the SQLite store and admin.key live (default ./data)'],
  ['--database-url <url>', 'DATABASE_URL', 'PostgreSQL URL; without it the embedded SQLite store is used'],
  ['--runtime <kind>', 'RUNTIME', 'auto, local or sim (default auto)'],
  ['--log-level <level>', 'LOG_LEVEL', 'fatal, error, warn, info, debug, trace or silent (default info)'],
  ['--sim-latency-ms <ms>', 'SIM_LATENCY_MS', 'delay of each simulated runtime operation (default 5)'],
  ['--sim-hosts <spec>', 'SIM_HOSTS', 'simulated hosts, <count>x<vcpu>/<memory_mib>/<storage_gib>[,...]'],
  ['--replica-id <id>', 'REPLICA_ID', 'name of this replica (PostgreSQL mode)'],
];

const RESTART_DELAY_MS = 1000;

function configFrom(options: Record<string, string | undefined>): Config {
  const flags: Record<string, string | undefined> = {};
  for (const [flag, env] of SERVE_FLAGS) {
    // A replica's id comes from the primary (HANGAR_REPLICA_ID), not the shared command line.
    if (env === 'REPLICA_ID' && cluster.isWorker) continue;
    const key = flag.slice(2).split(' ')[0]!.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    flags[env.toLowerCase().replace(/_/g, '-')] = options[key];
  }
  try {
    return loadConfig(process.env, flags);
  } catch (err) {
    if (err instanceof ConfigError) throw new Error(`configuration: ${err.message}`);
    throw err;
  }
}

function printAdminKey(config: Config, key: string | undefined): void {
  if (key !== undefined) process.stderr.write(`\nAdmin API key (shown once; also in ${config.dataDir}/admin.key):\n  ${key}\n\n`);
}

async function serveOne(config: Config): Promise<void> {
  const hangar = await startHangar(config);
  printAdminKey(config, hangar.adminKey);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    hangar.log.info({ signal }, 'shutting down');
    hangar.close().then(
      () => process.exit(0),
      (err: unknown) => {
        hangar.log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

/** The cluster primary: prepares the store once, forks the replicas, restarts one that dies, stops them all on a signal. */
async function servePrimary(config: Config, replicas: number): Promise<void> {
  if (config.databaseUrl === undefined) throw new Error('--replicas needs PostgreSQL (HANGAR_DATABASE_URL or --database-url)');
  const log = pino({ level: config.logLevel, base: { service: 'hangar', role: 'primary' } });
  printAdminKey(config, await initialiseStore(config, log));
  const base = config.replicaId ?? 'replica';
  let stopping = false;
  const fork = (index: number) => {
    const worker = cluster.fork({ HANGAR_REPLICA_ID: `${base}-${index}` });
    worker.on('exit', (code, signal) => {
      if (stopping) return;
      log.error({ replica: index, code, signal }, 'replica exited; starting it again');
      setTimeout(() => fork(index), RESTART_DELAY_MS);
    });
  };
  for (let i = 0; i < replicas; i++) fork(i);
  log.info({ replicas, port: config.port }, `running ${replicas} replicas on port ${config.port}`);
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill(signal);
    const check = setInterval(() => {
      if (Object.keys(cluster.workers ?? {}).length === 0) {
        clearInterval(check);
        process.exit(0);
      }
    }, 50);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

export function registerServeCommand(program: Command): void {
  const cmd = program.command('serve').description('run the Hangar controlplane');
  for (const [flag, env, help] of SERVE_FLAGS) cmd.option(flag, `${help} [HANGAR_${env}]`);
  cmd.option('--replicas <n>', 'run N replicas behind one port (PostgreSQL only) [HANGAR_REPLICAS]');
  cmd.action(async (options: Record<string, string | undefined>) => {
    const config = configFrom(options);
    const replicas = Number(options['replicas'] ?? process.env['HANGAR_REPLICAS'] ?? 1);
    if (!Number.isInteger(replicas) || replicas < 1 || replicas > 64) throw new Error('--replicas must be an integer from 1 to 64');
    if (replicas > 1 && cluster.isPrimary) return servePrimary(config, replicas);
    return serveOne(config);
  });
}
