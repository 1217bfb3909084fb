/**
 * Fixture builders for the domain tests. Times are fixed epoch milliseconds so
 * every expectation can be written as a literal.
 */
import type { DesiredState, Machine, Phase, Sizes } from '../../src/domain/types.js';

/** "Now" for every test that does not say otherwise. */
export const NOW = Date.UTC(2025, 0, 15, 12, 0, 0);
/** When fixture machines were created and last changed. */
export const T0 = NOW - 60 * 60 * 1000;

export const SIZES: Sizes = { vcpu: 1, memoryMib: 1024, storageGib: 10 };
export const HOST = 'host-a';

/** A running machine, converged, with its sizes applied and recent activity. Override anything. */
export function machine(overrides: Partial<Machine> = {}): Machine {
  return {
    machineId: 'dm-01946b2c-8a00-7000-8000-000000000001',
    orgId: '00000000-0000-4000-8000-000000000001',
    ...SIZES,
    autosleepSeconds: 300,
    desiredState: 'running',
    phase: 'running',
    reason: 'Started',
    retryable: true,
    lastError: null,
    revision: 7,
    lastTransitionAt: T0,
    lastProgressAt: T0,
    createdAt: T0,
    hostId: HOST,
    applied: { ...SIZES },
    attempts: 0,
    nextAttemptAt: null,
    lastActivityAt: NOW - 10_000,
    destroyedAt: null,
    logCompactedRevision: 0,
    ...overrides,
  };
}

/** The phases of the combination tables; `failed` comes in a retryable and a non-retryable flavour. */
export const PHASE_VARIANTS = [
  'accepted',
  'placement_pending',
  'starting',
  'running',
  'stopping',
  'sleeping',
  'destroying',
  'destroyed',
  'failed:retryable',
  'failed:non-retryable',
] as const;
export type PhaseVariant = (typeof PHASE_VARIANTS)[number];

export const DESIRED: readonly DesiredState[] = ['running', 'sleeping', 'destroyed'];

/**
 * A machine plausibly stored in `variant` with intent `desiredState`: placed
 * (host-a) from starting on, sizes applied only while a sandbox runs. A
 * retryable failure's backoff has already expired (nextAttemptAt in the past).
 */
export function machineIn(variant: PhaseVariant, desiredState: DesiredState): Machine {
  const phase: Phase = variant.startsWith('failed') ? 'failed' : (variant as Phase);
  const placed = !['accepted', 'placement_pending', 'destroyed'].includes(phase);
  const sandboxRuns = phase === 'running' || phase === 'stopping';
  const base: Partial<Machine> = {
    phase,
    desiredState,
    hostId: placed ? HOST : null,
    applied: sandboxRuns ? { ...SIZES } : null,
    reason: REASON_OF[variant],
    destroyedAt: phase === 'destroyed' ? T0 : null,
  };
  if (phase === 'failed') {
    const retryable = variant === 'failed:retryable';
    return machine({
      ...base,
      retryable,
      lastError: 'sandbox failed to boot',
      attempts: 1,
      nextAttemptAt: retryable ? NOW - 1 : null,
    });
  }
  return machine(base);
}

const REASON_OF: Record<PhaseVariant, string> = {
  accepted: 'Accepted',
  placement_pending: 'Scheduling',
  starting: 'Placed',
  running: 'Started',
  stopping: 'SleepRequested',
  sleeping: 'Stopped',
  destroying: 'DeleteRequested',
  destroyed: 'Destroyed',
  'failed:retryable': 'RuntimeStartFailed',
  'failed:non-retryable': 'RuntimeStartFailed',
};

/** Every (phase variant, desired state) pair, labelled for it.each. */
export function allStates(): Array<{ variant: PhaseVariant; desired: DesiredState }> {
  return PHASE_VARIANTS.flatMap((variant) => DESIRED.map((desired) => ({ variant, desired })));
}
