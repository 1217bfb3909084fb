/** `hangar serve`: runs the controlplane until SIGTERM/SIGINT, then shuts down gracefully. */
import type { Command } from 'commander';
import { ConfigError, loadConfig } from '../config.js';
import { startHangar } from '../server.js';

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

export function registerServeCommand(program: Command): void {
  const cmd = program.command('serve').description('run the Hangar controlplane');
  for (const [flag, env, help] of SERVE_FLAGS) cmd.option(flag, `${help} [HANGAR_${env}]`);
  cmd.action(async (options: Record<string, string | undefined>) => {
    const flags: Record<string, string | undefined> = {};
    for (const [flag, env] of SERVE_FLAGS) {
      const key = flag.slice(2).split(' ')[0]!.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
      flags[env.toLowerCase().replace(/_/g, '-')] = options[key];
    }
    let config;
    try {
      config = loadConfig(process.env, flags);
    } catch (err) {
      if (err instanceof ConfigError) throw new Error(`configuration: ${err.message}`);
      throw err;
    }
    const hangar = await startHangar(config);
    if (hangar.adminKey !== undefined) {
      process.stderr.write(`\nAdmin API key (shown once; also in ${config.dataDir}/admin.key):\n  ${hangar.adminKey}\n\n`);
    }
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
  });
}
