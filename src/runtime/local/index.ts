/** Placeholder until the local runtime lands: reports itself unavailable. */
import type { Runtime } from '../runtime.js';

export async function detectLocalSupport(): Promise<{ ok: true } | { ok: false; reason: string }> {
  return { ok: false, reason: 'the local runtime is not built into this version' };
}

export async function createLocalRuntime(_opts: {
  stateDir: string;
  reserve?: { vcpu: number; memoryMib: number; storageGib: number };
  logger?: { info(...a: unknown[]): void; warn(...a: unknown[]): void };
}): Promise<Runtime> {
  throw new Error('the local runtime is not built into this version');
}
