/**
 * Chooses the runtime: `sim`, `local`, or `auto` (local where the host
 * supports it, else sim with one log line saying why).
 */
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Runtime } from './runtime.js';
import { parseSimHosts, SimRuntime } from './sim/sim-runtime.js';

export function createSimRuntime(config: Config): SimRuntime {
  return new SimRuntime({
    hosts: parseSimHosts(config.sim.hosts),
    latencyMs: config.sim.latencyMs,
    faults: { failureRate: config.sim.failureRate, retryable: config.sim.failureRetryable, hostLossRate: config.sim.hostLossRate },
  });
}

export async function createRuntime(config: Config, log: Logger): Promise<Runtime> {
  if (config.runtime === 'sim') return createSimRuntime(config);
  const local = await import('./local/index.js');
  const support = await local.detectLocalSupport();
  if (support.ok) {
    return local.createLocalRuntime({
      stateDir: config.local.stateDir,
      reserve: { vcpu: config.local.reserveVcpu, memoryMib: config.local.reserveMemoryMib, storageGib: config.local.reserveStorageGib },
      poolSize: config.local.poolSize,
      logger: log.child({ component: 'local-runtime' }),
    });
  }
  if (config.runtime === 'local') throw new Error(`the local runtime cannot run here: ${support.reason}`);
  log.warn(`local runtime unavailable (${support.reason}); using the simulated runtime`);
  return createSimRuntime(config);
}
