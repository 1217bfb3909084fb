/**
 * The machine lifecycle state machine. Pure: every function takes the stored
 * machine (and the time) and returns a decision; the store commits it.
 *
 * desired_state is the user's intent, set only by mutations (and autosleep);
 * status.phase is what has been observed, moved only by the reconciler:
 *
 *   accepted           persisted by create; next: placement_pending
 *   placement_pending  waiting for a host with room (reason NoReadyHosts while none fits)
 *   starting           placed; the runtime boots or thaws the sandbox; next: running
 *   running            up; sizes applied live; autosleep clock runs
 *   stopping           the runtime freezes the sandbox; next: sleeping
 *   sleeping           no compute; storage kept on its host
 *   destroying         the runtime tears the sandbox down; next: destroyed
 *   destroyed          gone; readable until purged after the retention period
 *   failed             a runtime step failed: reason, last_error, retryable.
 *                      Retryable failures are retried with backoff; a
 *                      non-retryable one waits for the user to change intent.
 */
import { ApiError } from './errors.js';
import { sizesEqual } from './sizes.js';
import type { DesiredState, Machine, MachinePatch, Phase, Sizes } from './types.js';
import { assertNever } from './types.js';

export type LifecycleAction = 'sleep' | 'wake' | 'delete';

const TARGET: Record<LifecycleAction, DesiredState> = { sleep: 'sleeping', wake: 'running', delete: 'destroyed' };

/** A decision on a user request: commit `patch`, or nothing when it is already the intent. */
export interface MutationDecision {
  readonly patch: MachinePatch | null;
}

/** Reasons the domain itself writes; runtime failures add their own. */
export const REASONS = {
  accepted: 'Accepted',
  scheduling: 'Scheduling',
  noReadyHosts: 'NoReadyHosts',
  placed: 'Placed',
  started: 'Started',
  sleepRequested: 'SleepRequested',
  autosleep: 'Autosleep',
  stopped: 'Stopped',
  wakeRequested: 'WakeRequested',
  resizeRequested: 'ResizeRequested',
  resized: 'Resized',
  updated: 'Updated',
  deleteRequested: 'DeleteRequested',
  destroyed: 'Destroyed',
  sandboxLost: 'SandboxLost',
} as const;

/** A machine as create stores it: accepted, intent running, nothing placed yet. */
export function acceptedMachine(opts: {
  machineId: string;
  orgId: string;
  sizes: Sizes;
  autosleepSeconds: number;
  now: number;
}): Omit<Machine, 'revision' | 'lastProgressAt' | 'logCompactedRevision'> {
  return {
    machineId: opts.machineId,
    orgId: opts.orgId,
    ...opts.sizes,
    autosleepSeconds: opts.autosleepSeconds,
    desiredState: 'running',
    phase: 'accepted',
    reason: REASONS.accepted,
    retryable: true,
    lastError: null,
    lastTransitionAt: opts.now,
    createdAt: opts.now,
    hostId: null,
    applied: null,
    attempts: 0,
    nextAttemptAt: null,
    lastActivityAt: opts.now,
    destroyedAt: null,
  };
}

/** The sizes a machine asks for. */
export function sizesOf(m: Sizes): Sizes {
  return { vcpu: m.vcpu, memoryMib: m.memoryMib, storageGib: m.storageGib };
}

/** Converged: the observed phase is the intent, and a running machine has its sizes applied. */
export function isConverged(m: Machine): boolean {
  if (m.phase !== m.desiredState) return false;
  return m.phase !== 'running' || sizesEqual(m.applied, sizesOf(m));
}

/** A status stream ends after a change that converged, or a failure no retry will fix. */
export function endsStream(m: Machine): boolean {
  return isConverged(m) || (m.phase === 'failed' && !m.retryable);
}

function invalidState(m: Machine, expected: Phase | 'running', target: DesiredState): ApiError {
  return new ApiError('INVALID_STATE', 'requested lifecycle transition is invalid for current machine state', {
    details: {
      current_desired_state: m.desiredState,
      current_observed_state: m.phase,
      expected_observed_state: expected,
      target_desired_state: target,
    },
  });
}

function isBeingDestroyed(m: Machine): boolean {
  return m.desiredState === 'destroyed' || m.phase === 'destroying' || m.phase === 'destroyed';
}

/** A change of intent clears a failure's backoff, so the reconciler acts at once. */
const FRESH_ATTEMPT: MachinePatch = { retryable: true, attempts: 0, nextAttemptAt: null };

/** sleep, wake and delete. Throws ApiError(INVALID_STATE) when the phase does not allow it. */
export function decideAction(m: Machine, action: LifecycleAction, now: number): MutationDecision {
  const target = TARGET[action];
  if (m.desiredState === target) return { patch: null };
  switch (action) {
    case 'delete':
      return { patch: { ...FRESH_ATTEMPT, desiredState: 'destroyed', reason: REASONS.deleteRequested, lastActivityAt: now } };
    case 'sleep':
      if (isBeingDestroyed(m) || m.phase !== 'running') throw invalidState(m, 'running', target);
      return { patch: { desiredState: 'sleeping', reason: REASONS.sleepRequested, lastActivityAt: now } };
    case 'wake':
      if (isBeingDestroyed(m)) throw invalidState(m, 'sleeping', target);
      if (m.phase === 'running' || m.phase === 'stopping' || m.phase === 'sleeping' || m.phase === 'failed') {
        return { patch: { ...FRESH_ATTEMPT, desiredState: 'running', reason: REASONS.wakeRequested, lastActivityAt: now } };
      }
      throw invalidState(m, 'sleeping', target);
    default:
      return assertNever(action, 'action');
  }
}

export interface UpdateRequest {
  readonly vcpu?: number | undefined;
  readonly memoryMib?: number | undefined;
  readonly storageGib?: number | undefined;
  readonly autosleepSeconds?: number | undefined;
}

/**
 * PATCH: new sizes and/or autosleep. Sizes apply live to a running machine
 * (the reconciler calls the runtime), at wake to a sleeping one. Storage only
 * grows. Capacity is checked by the caller against the machine's host.
 */
export function decideUpdate(m: Machine, req: UpdateRequest, now: number): MutationDecision {
  if (isBeingDestroyed(m)) throw invalidState(m, 'running', 'running');
  if (req.storageGib !== undefined && req.storageGib < m.storageGib) {
    throw new ApiError('INVALID_ARGUMENT', 'storage can only grow', {
      details: { 'body.storage_gib': `must not be smaller than the current ${m.storageGib}` },
    });
  }
  const next: Sizes = {
    vcpu: req.vcpu ?? m.vcpu,
    memoryMib: req.memoryMib ?? m.memoryMib,
    storageGib: req.storageGib ?? m.storageGib,
  };
  const autosleepSeconds = req.autosleepSeconds ?? m.autosleepSeconds;
  const resized = !sizesEqual(next, sizesOf(m));
  if (!resized && autosleepSeconds === m.autosleepSeconds) return { patch: null };
  return {
    patch: {
      ...next,
      autosleepSeconds,
      reason: resized ? REASONS.resizeRequested : REASONS.updated,
      lastActivityAt: now,
    },
  };
}

/** What the reconciler should do next for a machine. */
export type Step =
  /** Nothing now; look again at `recheckAt` if set (backoff or autosleep). */
  | { readonly kind: 'idle'; readonly recheckAt?: number }
  /** Commit a change that needs no runtime call. */
  | { readonly kind: 'transition'; readonly patch: MachinePatch }
  /** Find a host (preferring `preferredHostId`) and move to starting, or wait. */
  | { readonly kind: 'place'; readonly preferredHostId: string | null }
  /** Call the runtime; commit `success` when it returns, a failure otherwise. */
  | { readonly kind: 'runtime'; readonly op: RuntimeOp; readonly success: MachinePatch; readonly failureReason: string };

export type RuntimeOp = 'start' | 'stop' | 'resize' | 'destroy';

/** A step that succeeded clears the failure bookkeeping. */
const SUCCEEDED: MachinePatch = { retryable: true, lastError: null, attempts: 0, nextAttemptAt: null };

/** Level-triggered: derived from the stored machine alone, so a restart resumes where it stopped. */
export function planStep(m: Machine, now: number): Step {
  if (m.phase === 'failed') {
    if (!m.retryable) return { kind: 'idle' };
    if (m.nextAttemptAt !== null && now < m.nextAttemptAt) return { kind: 'idle', recheckAt: m.nextAttemptAt };
  }
  switch (m.desiredState) {
    case 'destroyed':
      return planDestroy(m, now);
    case 'sleeping':
      return planSleep(m);
    case 'running':
      return planRun(m, now);
    default:
      return assertNever(m.desiredState, 'desired state');
  }
}

function planDestroy(m: Machine, now: number): Step {
  switch (m.phase) {
    case 'destroyed':
      return { kind: 'idle' };
    case 'destroying':
      return {
        kind: 'runtime',
        op: 'destroy',
        success: { ...SUCCEEDED, phase: 'destroyed', reason: REASONS.destroyed, hostId: null, applied: null, destroyedAt: now },
        failureReason: 'RuntimeDestroyFailed',
      };
    default:
      return { kind: 'transition', patch: { phase: 'destroying', reason: REASONS.deleteRequested } };
  }
}

function planSleep(m: Machine): Step {
  switch (m.phase) {
    case 'sleeping':
    case 'destroying':
    case 'destroyed':
      return { kind: 'idle' };
    case 'running':
    case 'starting':
      // Keeps the intent's reason (SleepRequested or Autosleep) on the stopping frame.
      return { kind: 'transition', patch: { phase: 'stopping' } };
    case 'failed':
      return m.hostId === null
        ? { kind: 'transition', patch: { ...SUCCEEDED, phase: 'sleeping', reason: REASONS.stopped, applied: null } }
        : { kind: 'transition', patch: { phase: 'stopping', reason: REASONS.sleepRequested } };
    case 'accepted':
    case 'placement_pending':
      // Nothing was ever started: asleep already.
      return { kind: 'transition', patch: { ...SUCCEEDED, phase: 'sleeping', reason: REASONS.stopped, applied: null } };
    case 'stopping':
      return {
        kind: 'runtime',
        op: 'stop',
        success: { ...SUCCEEDED, phase: 'sleeping', reason: REASONS.stopped, applied: null },
        failureReason: 'RuntimeStopFailed',
      };
    default:
      return assertNever(m.phase, 'phase');
  }
}

function planRun(m: Machine, now: number): Step {
  switch (m.phase) {
    case 'running': {
      if (!sizesEqual(m.applied, sizesOf(m))) {
        return {
          kind: 'runtime',
          op: 'resize',
          success: { ...SUCCEEDED, applied: sizesOf(m), reason: REASONS.resized },
          failureReason: 'RuntimeResizeFailed',
        };
      }
      if (m.autosleepSeconds === 0) return { kind: 'idle' };
      const due = m.lastActivityAt + m.autosleepSeconds * 1000;
      if (now >= due) return { kind: 'transition', patch: { desiredState: 'sleeping', reason: REASONS.autosleep } };
      return { kind: 'idle', recheckAt: due };
    }
    case 'accepted':
      return { kind: 'transition', patch: { phase: 'placement_pending', reason: REASONS.scheduling } };
    case 'placement_pending':
    case 'sleeping':
    case 'stopping':
    case 'failed':
      return { kind: 'place', preferredHostId: m.hostId };
    case 'starting':
      return {
        kind: 'runtime',
        op: 'start',
        success: { ...SUCCEEDED, phase: 'running', reason: REASONS.started, applied: sizesOf(m), lastActivityAt: now },
        failureReason: 'RuntimeStartFailed',
      };
    case 'destroying':
    case 'destroyed':
      return { kind: 'idle' };
    default:
      return assertNever(m.phase, 'phase');
  }
}

/**
 * The outcome of a placement attempt: a host, or waiting for one. A machine
 * whose storage is on a live host keeps that host while it waits (its disk
 * is there, and still takes room). Null: nothing to commit.
 */
export function placementPatch(m: Machine, hostId: string | null, ownHostAlive: boolean): MachinePatch | null {
  if (hostId !== null) return { ...SUCCEEDED, phase: 'starting', hostId, reason: REASONS.placed };
  const keptHost = ownHostAlive ? m.hostId : null;
  // Already waiting: only a fresh attempt (Scheduling) says NoReadyHosts. A later change (a PATCH's
  // Updated) keeps its own reason; re-committing NoReadyHosts would double every commit and frame.
  if (m.phase === 'placement_pending' && m.reason !== REASONS.scheduling && m.hostId === keptHost) return null;
  return { phase: 'placement_pending', hostId: keptHost, applied: null, reason: REASONS.noReadyHosts };
}

export interface BackoffPolicy {
  readonly baseMs: number;
  readonly capMs: number;
}

/** Capped exponential backoff: base, 2x base, 4x base, ... up to cap. */
export function backoffDelay(attempts: number, policy: BackoffPolicy): number {
  return Math.min(policy.capMs, policy.baseMs * 2 ** Math.min(attempts, 30));
}

/** A failed runtime step. Retryable ones come back after backoff. */
export function failurePatch(
  m: Machine,
  failure: { reason: string; message: string; retryable: boolean },
  now: number,
  policy: BackoffPolicy,
): MachinePatch {
  return {
    phase: 'failed',
    reason: failure.reason,
    lastError: failure.message,
    retryable: failure.retryable,
    attempts: m.attempts + 1,
    nextAttemptAt: failure.retryable ? now + backoffDelay(m.attempts, policy) : null,
  };
}

/** A sandbox the runtime no longer has (died, or its host was lost): failed, retryable, unplaced if the host is gone. */
export function lostPatch(hostGone: boolean, message: string): MachinePatch {
  return {
    phase: 'failed',
    reason: REASONS.sandboxLost,
    lastError: message,
    retryable: true,
    applied: null,
    nextAttemptAt: null,
    ...(hostGone ? { hostId: null } : {}),
  };
}

/** Applies a patch: the next stored machine. The store supplies revision and commit time. */
export function applyPatch(m: Machine, patch: MachinePatch, revision: number, now: number): Machine {
  const next: Machine = { ...m, ...patch, revision, lastProgressAt: now };
  if (next.phase !== m.phase) return { ...next, lastTransitionAt: now };
  return next;
}
