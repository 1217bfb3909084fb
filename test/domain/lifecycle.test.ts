/**
 * The lifecycle state machine, checked against the contract's "Lifecycle"
 * section. Expectations are written out as tables, never computed by the code
 * under test.
 */
import { describe, expect, it } from 'vitest';
import { ApiError } from '../../src/domain/errors.js';
import {
  applyPatch,
  backoffDelay,
  decideAction,
  decideUpdate,
  endsStream,
  failurePatch,
  isConverged,
  placementPatch,
  planStep,
  type LifecycleAction,
  type MutationDecision,
  type RuntimeOp,
  type Step,
} from '../../src/domain/lifecycle.js';
import type { DesiredState, Machine, MachinePatch, Phase } from '../../src/domain/types.js';
import { allStates, HOST, machine, machineIn, NOW, SIZES, T0, type PhaseVariant } from './fixtures.js';

// ---------------------------------------------------------------------------
// Helpers

/** Runs `fn`, which must throw an ApiError; returns it. */
function apiErrorOf(fn: () => unknown): ApiError {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(thrown, 'expected an ApiError to be thrown').toBeInstanceOf(ApiError);
  return thrown as ApiError;
}

/** Runs a decision that must not throw and returns its patch. */
function patchOf(decide: () => MutationDecision): MachinePatch | null {
  return decide().patch;
}

const INVALID_STATE_DETAIL_KEYS = [
  'current_desired_state',
  'current_observed_state',
  'expected_observed_state',
  'target_desired_state',
].sort();

function expectInvalidState(err: ApiError, m: Machine): void {
  expect(err.code).toBe('INVALID_STATE');
  expect(err.status).toBe(409);
  expect(err.details).toBeDefined();
  expect(Object.keys(err.details ?? {}).sort()).toEqual(INVALID_STATE_DETAIL_KEYS);
  expect(err.details?.current_desired_state).toBe(m.desiredState);
  expect(err.details?.current_observed_state).toBe(m.phase);
}

// ---------------------------------------------------------------------------
// decideAction / decideUpdate over every (phase, desired state)

/** no-op: `{patch: null}`; patch: a change of intent; invalid: ApiError INVALID_STATE. */
type Outcome = 'noop' | 'patch' | 'invalid';
const N: Outcome = 'noop';
const P: Outcome = 'patch';
const X: Outcome = 'invalid';
/** Columns: the machine's current desired state. */
type Row = Readonly<Record<DesiredState, Outcome>>;
const row = (running: Outcome, sleeping: Outcome, destroyed: Outcome): Row => ({ running, sleeping, destroyed });

type Event = LifecycleAction | 'resize';

/**
 * Per contract: a mutation whose desired state is already the machine's is a
 * no-op; sleep needs phase running; wake needs running, stopping, sleeping or
 * failed; anything but delete on a machine being destroyed (desired destroyed,
 * phase destroying or destroyed) is INVALID_STATE; delete is always allowed.
 *                                        desired: running  sleeping  destroyed
 */
const EXPECTED_OUTCOME: Readonly<Record<Event, Readonly<Record<PhaseVariant, Row>>>> = {
  sleep: {
    accepted:               row(X, N, X),
    placement_pending:      row(X, N, X),
    starting:               row(X, N, X),
    running:                row(P, N, X),
    stopping:               row(X, N, X),
    sleeping:               row(X, N, X),
    destroying:             row(X, N, X),
    destroyed:              row(X, N, X),
    'failed:retryable':     row(X, N, X),
    'failed:non-retryable': row(X, N, X),
  },
  wake: {
    accepted:               row(N, X, X),
    placement_pending:      row(N, X, X),
    starting:               row(N, X, X),
    running:                row(N, P, X), // a pending sleep is called off
    stopping:               row(N, P, X),
    sleeping:               row(N, P, X),
    // Desired running while destroying/destroyed cannot arise (nothing moves
    // desired state off destroyed); the no-op rule answers first.
    destroying:             row(N, X, X),
    destroyed:              row(N, X, X),
    'failed:retryable':     row(N, P, X),
    'failed:non-retryable': row(N, P, X),
  },
  delete: {
    accepted:               row(P, P, N),
    placement_pending:      row(P, P, N),
    starting:               row(P, P, N),
    running:                row(P, P, N),
    stopping:               row(P, P, N),
    sleeping:               row(P, P, N),
    destroying:             row(P, P, N),
    destroyed:              row(P, P, N),
    'failed:retryable':     row(P, P, N),
    'failed:non-retryable': row(P, P, N),
  },
  // PATCH {vcpu: 2} on a 1-vCPU machine.
  resize: {
    accepted:               row(P, P, X),
    placement_pending:      row(P, P, X),
    starting:               row(P, P, X),
    running:                row(P, P, X),
    stopping:               row(P, P, X),
    sleeping:               row(P, P, X),
    destroying:             row(X, X, X),
    destroyed:              row(X, X, X),
    'failed:retryable':     row(P, P, X),
    'failed:non-retryable': row(P, P, X),
  },
};

/** What an accepted action commits: the new intent and why (phase is the reconciler's to move). */
const ACTION_PATCH: Readonly<Record<LifecycleAction, MachinePatch>> = {
  sleep: { desiredState: 'sleeping', reason: 'SleepRequested', lastActivityAt: NOW },
  wake: { desiredState: 'running', reason: 'WakeRequested', lastActivityAt: NOW },
  delete: { desiredState: 'destroyed', reason: 'DeleteRequested', lastActivityAt: NOW },
};

/** INVALID_STATE details.expected_observed_state / target_desired_state per action. */
const ACTION_INVALID_DETAILS: Readonly<Record<'sleep' | 'wake', { expected: Phase; target: DesiredState }>> = {
  sleep: { expected: 'running', target: 'sleeping' },
  wake: { expected: 'sleeping', target: 'running' },
};

const ACTIONS: readonly LifecycleAction[] = ['sleep', 'wake', 'delete'];
const actionCombos = ACTIONS.flatMap((action) =>
  allStates().map(({ variant, desired }) => ({ action, variant, desired, outcome: EXPECTED_OUTCOME[action][variant][desired] })),
);

describe('decideAction: every (phase, desired state, action)', () => {
  it('covers 10 phase variants x 3 desired states x 3 actions', () => {
    expect(actionCombos).toHaveLength(90);
  });

  it.each(actionCombos)('$action on phase $variant, desired $desired -> $outcome', ({ action, variant, desired, outcome }) => {
    const m = machineIn(variant, desired);
    if (outcome === 'invalid') {
      const err = apiErrorOf(() => decideAction(m, action, NOW));
      expectInvalidState(err, m);
      expect(action).not.toBe('delete');
      const want = ACTION_INVALID_DETAILS[action as 'sleep' | 'wake'];
      expect(err.details?.target_desired_state).toBe(want.target);
      expect(err.details?.expected_observed_state).toBe(want.expected);
      expect(err.shouldRetry).toBe(false);
      return;
    }
    const patch = patchOf(() => decideAction(m, action, NOW));
    if (outcome === 'noop') {
      expect(patch).toBeNull();
      return;
    }
    expect(patch).not.toBeNull();
    expect(patch).toMatchObject(ACTION_PATCH[action]);
    // Mutations state intent; only the reconciler moves the observed phase.
    expect(patch).not.toHaveProperty('phase');
  });
});

describe('decideUpdate (PATCH resize): every (phase, desired state)', () => {
  const combos = allStates().map(({ variant, desired }) => ({ variant, desired, outcome: EXPECTED_OUTCOME.resize[variant][desired] }));

  it('covers 10 phase variants x 3 desired states', () => {
    expect(combos).toHaveLength(30);
  });

  it.each(combos)('resize on phase $variant, desired $desired -> $outcome', ({ variant, desired, outcome }) => {
    const m = machineIn(variant, desired);
    if (outcome === 'invalid') {
      expectInvalidState(apiErrorOf(() => decideUpdate(m, { vcpu: 2 }, NOW)), m);
      return;
    }
    expect(outcome).toBe('patch');
    const patch = patchOf(() => decideUpdate(m, { vcpu: 2 }, NOW));
    expect(patch).toMatchObject({ vcpu: 2, memoryMib: SIZES.memoryMib, storageGib: SIZES.storageGib, reason: 'ResizeRequested' });
    // A resize changes neither the intent nor the observed phase.
    expect(patch).not.toHaveProperty('phase');
    expect(patch).not.toHaveProperty('desiredState');
  });
});

// ---------------------------------------------------------------------------
// planStep over every (phase, desired state)

type StepExpect =
  | { readonly kind: 'idle'; readonly recheckAt?: number }
  | { readonly kind: 'transition'; readonly patch: MachinePatch }
  | { readonly kind: 'place'; readonly preferredHostId: string | null }
  | { readonly kind: 'runtime'; readonly op: RuntimeOp; readonly success: MachinePatch };

const idle = (recheckAt?: number): StepExpect => (recheckAt === undefined ? { kind: 'idle' } : { kind: 'idle', recheckAt });
const to = (patch: MachinePatch): StepExpect => ({ kind: 'transition', patch });
const place = (preferredHostId: string | null): StepExpect => ({ kind: 'place', preferredHostId });
const runtime = (op: RuntimeOp, success: MachinePatch): StepExpect => ({ kind: 'runtime', op, success });

/** The fixture's running machine was last active 10 s ago with autosleep 300 s. */
const AUTOSLEEP_DUE = NOW - 10_000 + 300_000;
const DESTROYING = to({ phase: 'destroying', reason: 'DeleteRequested' });

/**
 * Transitions of the contract:
 *   running:   accepted -> placement_pending -> starting -> running
 *   sleeping:  running -> stopping -> sleeping
 *   waking:    sleeping -> (placement) -> starting -> running
 *   destroyed: any -> destroying -> destroyed
 *   failed:    retryable: retried (its backoff is over in this table); non-retryable: idle
 */
const EXPECTED_STEP: Readonly<Record<PhaseVariant, Readonly<Record<DesiredState, StepExpect>>>> = {
  accepted: {
    running: to({ phase: 'placement_pending' }),
    sleeping: to({ phase: 'sleeping' }), // never started: asleep already
    destroyed: DESTROYING,
  },
  placement_pending: {
    running: place(null),
    sleeping: to({ phase: 'sleeping' }),
    destroyed: DESTROYING,
  },
  starting: {
    running: runtime('start', { phase: 'running', reason: 'Started', applied: SIZES }),
    sleeping: to({ phase: 'stopping' }),
    destroyed: DESTROYING,
  },
  running: {
    running: idle(AUTOSLEEP_DUE),
    sleeping: to({ phase: 'stopping' }),
    destroyed: DESTROYING,
  },
  stopping: {
    running: place(HOST),
    sleeping: runtime('stop', { phase: 'sleeping', reason: 'Stopped', applied: null }),
    destroyed: DESTROYING,
  },
  sleeping: {
    running: place(HOST), // storage is on its host: prefer it
    sleeping: idle(),
    destroyed: DESTROYING,
  },
  destroying: {
    running: idle(),
    sleeping: idle(),
    destroyed: runtime('destroy', { phase: 'destroyed', reason: 'Destroyed', hostId: null, applied: null, destroyedAt: NOW }),
  },
  destroyed: {
    running: idle(),
    sleeping: idle(),
    destroyed: idle(),
  },
  'failed:retryable': {
    running: place(HOST),
    sleeping: to({ phase: 'stopping' }),
    destroyed: DESTROYING,
  },
  'failed:non-retryable': {
    running: idle(),
    sleeping: idle(),
    destroyed: idle(),
  },
};

function expectStep(step: Step, want: StepExpect): void {
  switch (want.kind) {
    case 'idle':
      expect(step).toEqual(want);
      return;
    case 'place':
      expect(step).toEqual(want);
      return;
    case 'transition':
      expect(step.kind).toBe('transition');
      if (step.kind === 'transition') expect(step.patch).toMatchObject(want.patch);
      return;
    case 'runtime':
      expect(step.kind).toBe('runtime');
      if (step.kind === 'runtime') {
        expect(step.op).toBe(want.op);
        expect(step.success).toMatchObject(want.success);
        expect(step.failureReason).toMatch(/^[A-Z][A-Za-z]+$/);
      }
      return;
  }
}

function describeStep(want: StepExpect): string {
  switch (want.kind) {
    case 'idle':
      return want.recheckAt === undefined ? 'idle' : 'idle until recheck';
    case 'transition':
      return `transition ${JSON.stringify(want.patch)}`;
    case 'place':
      return `place (prefer ${want.preferredHostId ?? 'none'})`;
    case 'runtime':
      return `runtime ${want.op}`;
  }
}

describe('planStep (reconcile): every (phase, desired state)', () => {
  const combos = allStates().map(({ variant, desired }) => {
    const want = EXPECTED_STEP[variant][desired];
    return { variant, desired, want, label: describeStep(want) };
  });

  it('covers 10 phase variants x 3 desired states', () => {
    expect(combos).toHaveLength(30);
  });

  it.each(combos)('phase $variant, desired $desired -> $label', ({ variant, desired, want }) => {
    expectStep(planStep(machineIn(variant, desired), NOW), want);
  });

  describe('a retryable failure waits for its backoff', () => {
    const desiredStates: readonly DesiredState[] = ['running', 'sleeping', 'destroyed'];

    it.each(desiredStates)('desired %s: before nextAttemptAt -> idle until then', (desired) => {
      const m = machine({ ...machineIn('failed:retryable', desired), nextAttemptAt: NOW + 5_000 });
      expect(planStep(m, NOW)).toEqual({ kind: 'idle', recheckAt: NOW + 5_000 });
      expect(planStep(m, NOW + 4_999)).toEqual({ kind: 'idle', recheckAt: NOW + 5_000 });
    });

    it.each(desiredStates)('desired %s: at and after nextAttemptAt -> retried', (desired) => {
      const m = machine({ ...machineIn('failed:retryable', desired), nextAttemptAt: NOW + 5_000 });
      expectStep(planStep(m, NOW + 5_000), EXPECTED_STEP['failed:retryable'][desired]);
      expectStep(planStep(m, NOW + 60_000), EXPECTED_STEP['failed:retryable'][desired]);
    });

    it.each(desiredStates)('desired %s: a non-retryable failure stays idle however late', (desired) => {
      const m = machineIn('failed:non-retryable', desired);
      expect(planStep(m, NOW + 365 * 24 * 3_600_000)).toEqual({ kind: 'idle' });
    });
  });

  it('a failed machine that lost its host goes straight to sleeping when asked to sleep', () => {
    const m = machine({ ...machineIn('failed:retryable', 'sleeping'), hostId: null });
    expectStep(planStep(m, NOW), to({ phase: 'sleeping', reason: 'Stopped' }));
  });

  it('a failed machine that lost its host is placed afresh when it should run', () => {
    const m = machine({ ...machineIn('failed:retryable', 'running'), hostId: null });
    expect(planStep(m, NOW)).toEqual({ kind: 'place', preferredHostId: null });
  });

  it('running -> stopping keeps the reason of the intent (SleepRequested or Autosleep)', () => {
    for (const reason of ['SleepRequested', 'Autosleep']) {
      const m = machine({ desiredState: 'sleeping', reason });
      const step = planStep(m, NOW);
      expect(step.kind).toBe('transition');
      if (step.kind !== 'transition') continue;
      expect(applyPatch(m, step.patch, 8, NOW)).toMatchObject({ phase: 'stopping', reason });
    }
  });
});

// ---------------------------------------------------------------------------
// Autosleep and resize on a running machine

describe('planStep: autosleep', () => {
  const autosleeping = { kind: 'transition', patch: { desiredState: 'sleeping', reason: 'Autosleep' } } as const;

  it('sleeps a machine idle for longer than autosleep', () => {
    const m = machine({ autosleepSeconds: 300, lastActivityAt: NOW - 301_000 });
    expect(planStep(m, NOW)).toEqual(autosleeping);
  });

  it('sleeps a machine idle for exactly autosleep', () => {
    const m = machine({ autosleepSeconds: 300, lastActivityAt: NOW - 300_000 });
    expect(planStep(m, NOW)).toEqual(autosleeping);
  });

  it('waits, with a recheck at the deadline, while the deadline is in the future', () => {
    const m = machine({ autosleepSeconds: 300, lastActivityAt: NOW - 299_000 });
    expect(planStep(m, NOW)).toEqual({ kind: 'idle', recheckAt: NOW + 1_000 });
  });

  it('never sleeps a machine with autosleep 0 (never)', () => {
    const m = machine({ autosleepSeconds: 0, lastActivityAt: NOW - 365 * 24 * 3_600_000 });
    expect(planStep(m, NOW)).toEqual({ kind: 'idle' });
  });

  it('only applies to a running machine that should run', () => {
    const sleeping = machine({ phase: 'sleeping', desiredState: 'sleeping', applied: null, lastActivityAt: 0 });
    expect(planStep(sleeping, NOW)).toEqual({ kind: 'idle' });
  });
});

describe('planStep: pending resize', () => {
  it('asks the runtime to resize a running machine whose applied sizes differ', () => {
    const m = machine({ vcpu: 2, memoryMib: 2048, applied: { ...SIZES } });
    expectStep(
      planStep(m, NOW),
      runtime('resize', { applied: { vcpu: 2, memoryMib: 2048, storageGib: 10 }, reason: 'Resized' }),
    );
  });

  it('asks the runtime to resize when only storage grew', () => {
    const m = machine({ storageGib: 20 });
    expectStep(planStep(m, NOW), runtime('resize', { applied: { ...SIZES, storageGib: 20 } }));
  });

  it('the resize keeps the machine running (phase unchanged)', () => {
    const m = machine({ vcpu: 2 });
    const step = planStep(m, NOW);
    expect(step.kind).toBe('runtime');
    if (step.kind !== 'runtime') return;
    const next = applyPatch(m, step.success, 8, NOW);
    expect(next.phase).toBe('running');
    expect(next.lastTransitionAt).toBe(m.lastTransitionAt);
    expect(next.revision).toBe(8);
    expect(isConverged(next)).toBe(true);
  });

  it('does not resize a sleeping machine: sizes apply at wake', () => {
    const m = machine({ phase: 'sleeping', desiredState: 'sleeping', vcpu: 4, applied: null });
    expect(planStep(m, NOW)).toEqual({ kind: 'idle' });
  });
});

// ---------------------------------------------------------------------------
// Convergence

describe('isConverged / endsStream', () => {
  const cases: ReadonlyArray<{ name: string; m: Partial<Machine>; converged: boolean; ends: boolean }> = [
    { name: 'running, sizes applied', m: {}, converged: true, ends: true },
    { name: 'running, resize pending', m: { vcpu: 2 }, converged: false, ends: false },
    { name: 'running, nothing applied', m: { applied: null }, converged: false, ends: false },
    { name: 'sleeping, desired sleeping', m: { phase: 'sleeping', desiredState: 'sleeping', applied: null }, converged: true, ends: true },
    { name: 'destroyed, desired destroyed', m: { phase: 'destroyed', desiredState: 'destroyed', applied: null, hostId: null }, converged: true, ends: true },
    { name: 'stopping, desired sleeping', m: { phase: 'stopping', desiredState: 'sleeping' }, converged: false, ends: false },
    { name: 'running, desired sleeping', m: { desiredState: 'sleeping' }, converged: false, ends: false },
    { name: 'sleeping, desired running', m: { phase: 'sleeping', applied: null }, converged: false, ends: false },
    { name: 'accepted, desired running', m: { phase: 'accepted', applied: null, hostId: null }, converged: false, ends: false },
    { name: 'destroying, desired destroyed', m: { phase: 'destroying', desiredState: 'destroyed' }, converged: false, ends: false },
    { name: 'failed retryable', m: { phase: 'failed', retryable: true, applied: null }, converged: false, ends: false },
    { name: 'failed non-retryable', m: { phase: 'failed', retryable: false, applied: null }, converged: false, ends: true },
  ];

  it.each(cases)('$name: converged $converged, ends stream $ends', ({ m, converged, ends }) => {
    const subject = machine(m);
    expect(isConverged(subject)).toBe(converged);
    expect(endsStream(subject)).toBe(ends);
  });
});

// ---------------------------------------------------------------------------
// Committing changes

describe('applyPatch', () => {
  it('sets the revision and the progress time on every change', () => {
    const m = machine();
    const next = applyPatch(m, { reason: 'Updated' }, 42, NOW);
    expect(next.revision).toBe(42);
    expect(next.lastProgressAt).toBe(NOW);
    expect(next.reason).toBe('Updated');
  });

  it('sets revision and progress time even for an empty patch', () => {
    const next = applyPatch(machine(), {}, 9, NOW + 5);
    expect(next.revision).toBe(9);
    expect(next.lastProgressAt).toBe(NOW + 5);
  });

  it('moves lastTransitionAt only when the phase changes', () => {
    const m = machine({ lastTransitionAt: T0 });
    expect(applyPatch(m, { desiredState: 'sleeping' }, 8, NOW).lastTransitionAt).toBe(T0);
    expect(applyPatch(m, { phase: 'running', reason: 'Resized' }, 8, NOW).lastTransitionAt).toBe(T0);
    expect(applyPatch(m, { phase: 'stopping' }, 8, NOW).lastTransitionAt).toBe(NOW);
  });

  it('keeps every field the patch does not name, and leaves the stored machine alone', () => {
    const m = machine();
    const before = structuredClone(m);
    const next = applyPatch(m, { phase: 'stopping', reason: 'SleepRequested' }, 8, NOW);
    expect(m).toEqual(before);
    expect(next).toEqual({ ...before, phase: 'stopping', reason: 'SleepRequested', revision: 8, lastProgressAt: NOW, lastTransitionAt: NOW });
  });
});

describe('placementPatch', () => {
  it('a host found: starting on it, reason Placed, failure bookkeeping cleared', () => {
    const m = machine({ phase: 'placement_pending', hostId: null, applied: null, attempts: 2, lastError: 'x' });
    expect(placementPatch(m, 'host-b', true)).toMatchObject({
      phase: 'starting',
      hostId: 'host-b',
      reason: 'Placed',
      attempts: 0,
      nextAttemptAt: null,
      lastError: null,
    });
  });

  it('no host: placement_pending, unplaced, reason NoReadyHosts', () => {
    const m = machine({ phase: 'placement_pending', reason: 'Scheduling', hostId: null, applied: null });
    expect(placementPatch(m, null, false)).toMatchObject({ phase: 'placement_pending', hostId: null, reason: 'NoReadyHosts' });
  });

  it('no host for a waking machine whose host is gone: placement_pending first, unplaced', () => {
    const m = machine({ phase: 'sleeping', applied: null });
    expect(placementPatch(m, null, false)).toMatchObject({ phase: 'placement_pending', hostId: null, applied: null, reason: 'NoReadyHosts' });
  });

  it('no room on its own live host: a waking machine waits there, keeping the host its storage is on', () => {
    const m = machine({ phase: 'sleeping', applied: null });
    expect(m.hostId).not.toBeNull();
    expect(placementPatch(m, null, true)).toMatchObject({ phase: 'placement_pending', hostId: m.hostId, reason: 'NoReadyHosts' });
  });

  it('still no host while already waiting for one: nothing to commit', () => {
    const m = machine({ phase: 'placement_pending', reason: 'NoReadyHosts', hostId: null, applied: null });
    expect(placementPatch(m, null, false)).toBeNull();
  });

  it('still no host after a change while waiting (a PATCH said Updated): nothing to commit, the reason stays', () => {
    const m = machine({ phase: 'placement_pending', reason: 'Updated', hostId: null, applied: null });
    expect(placementPatch(m, null, false)).toBeNull();
  });

  it('a fresh attempt (Scheduling) that finds no host says NoReadyHosts once', () => {
    const m = machine({ phase: 'placement_pending', reason: 'Scheduling', hostId: null, applied: null });
    expect(placementPatch(m, null, false)).toMatchObject({ reason: 'NoReadyHosts' });
  });
});

describe('backoffDelay: capped exponential', () => {
  const policy = { baseMs: 1_000, capMs: 60_000 };
  const table: ReadonlyArray<[attempts: number, delayMs: number]> = [
    [0, 1_000],
    [1, 2_000],
    [2, 4_000],
    [3, 8_000],
    [5, 32_000],
    [6, 60_000], // 64 s, capped
    [10, 60_000],
    [1_000, 60_000],
  ];

  it.each(table)('attempt %i -> %i ms', (attempts, delayMs) => {
    expect(backoffDelay(attempts, policy)).toBe(delayMs);
  });

  it('never decreases as attempts grow', () => {
    let previous = 0;
    for (let attempts = 0; attempts < 100; attempts++) {
      const delay = backoffDelay(attempts, policy);
      expect(delay).toBeGreaterThanOrEqual(previous);
      expect(Number.isFinite(delay)).toBe(true);
      previous = delay;
    }
  });
});

describe('failurePatch', () => {
  const policy = { baseMs: 1_000, capMs: 60_000 };

  it('a retryable failure: failed, counted, retried after the backoff', () => {
    const m = machine({ phase: 'starting', attempts: 0 });
    const patch = failurePatch(m, { reason: 'RuntimeStartFailed', message: 'boom', retryable: true }, NOW, policy);
    expect(patch).toEqual({
      phase: 'failed',
      reason: 'RuntimeStartFailed',
      lastError: 'boom',
      retryable: true,
      attempts: 1,
      nextAttemptAt: NOW + 1_000,
    });
  });

  it('backs off further with each consecutive failure, up to the cap', () => {
    const fail = { reason: 'RuntimeStartFailed', message: 'boom', retryable: true };
    expect(failurePatch(machine({ attempts: 3 }), fail, NOW, policy)).toMatchObject({ attempts: 4, nextAttemptAt: NOW + 8_000 });
    expect(failurePatch(machine({ attempts: 20 }), fail, NOW, policy)).toMatchObject({ attempts: 21, nextAttemptAt: NOW + 60_000 });
  });

  it('a non-retryable failure has no next attempt and parks the machine', () => {
    const m = machine({ phase: 'starting' });
    const patch = failurePatch(m, { reason: 'ImageInvalid', message: 'bad image', retryable: false }, NOW, policy);
    expect(patch).toMatchObject({ phase: 'failed', retryable: false, nextAttemptAt: null, lastError: 'bad image' });
    const failed = applyPatch(m, patch, 8, NOW);
    expect(planStep(failed, NOW + 3_600_000)).toEqual({ kind: 'idle' });
    expect(endsStream(failed)).toBe(true);
  });

  it('a retryable failure is retried once its backoff is over', () => {
    const m = machine({ phase: 'starting', applied: null });
    const failed = applyPatch(m, failurePatch(m, { reason: 'RuntimeStartFailed', message: 'x', retryable: true }, NOW, policy), 8, NOW);
    expect(planStep(failed, NOW + 999)).toEqual({ kind: 'idle', recheckAt: NOW + 1_000 });
    expect(planStep(failed, NOW + 1_000)).toEqual({ kind: 'place', preferredHostId: HOST });
    expect(endsStream(failed)).toBe(false);
  });
});

// ---------------------------------------------------------------------------
// decideUpdate details

describe('decideUpdate', () => {
  it('storage shrink: INVALID_ARGUMENT naming body.storage_gib', () => {
    const err = apiErrorOf(() => decideUpdate(machine({ storageGib: 10 }), { storageGib: 5 }, NOW));
    expect(err.code).toBe('INVALID_ARGUMENT');
    expect(err.status).toBe(400);
    expect(Object.keys(err.details ?? {})).toEqual(['body.storage_gib']);
  });

  it('storage kept or grown is fine', () => {
    expect(decideUpdate(machine(), { storageGib: 10 }, NOW).patch).toBeNull();
    expect(decideUpdate(machine(), { storageGib: 11 }, NOW).patch).toMatchObject({ storageGib: 11, reason: 'ResizeRequested' });
  });

  it('no change: no-op', () => {
    expect(decideUpdate(machine(), {}, NOW)).toEqual({ patch: null });
    expect(decideUpdate(machine(), { vcpu: 1, memoryMib: 1024, storageGib: 10, autosleepSeconds: 300 }, NOW)).toEqual({ patch: null });
  });

  it('autosleep alone changes: committed without a resize', () => {
    const patch = decideUpdate(machine(), { autosleepSeconds: 0 }, NOW).patch;
    expect(patch).toMatchObject({ autosleepSeconds: 0, vcpu: 1, memoryMib: 1024, storageGib: 10, lastActivityAt: NOW });
    expect(patch?.reason).not.toBe('ResizeRequested');
  });

  it('a resize keeps the fields the request leaves out', () => {
    expect(decideUpdate(machine(), { memoryMib: 4096 }, NOW).patch).toMatchObject({
      vcpu: 1,
      memoryMib: 4096,
      storageGib: 10,
      autosleepSeconds: 300,
      reason: 'ResizeRequested',
    });
  });

  it('a resize of a running machine leaves it running with the new sizes pending', () => {
    const m = machine();
    const patch = decideUpdate(m, { vcpu: 2 }, NOW).patch;
    expect(patch).not.toBeNull();
    const next = applyPatch(m, patch ?? {}, 8, NOW);
    expect(next.phase).toBe('running');
    expect(isConverged(next)).toBe(false);
    expect(planStep(next, NOW).kind).toBe('runtime');
  });

  it.each([
    ['destroyed', 'destroyed'],
    ['destroying', 'destroyed'],
    ['running', 'destroyed'],
  ] as const)('phase %s, desired %s: INVALID_STATE', (phase, desiredState) => {
    const m = machine({ phase, desiredState });
    expectInvalidState(apiErrorOf(() => decideUpdate(m, { vcpu: 2 }, NOW)), m);
    expectInvalidState(apiErrorOf(() => decideUpdate(m, { autosleepSeconds: 60 }, NOW)), m);
  });
});

// ---------------------------------------------------------------------------
// Changes of intent clear a failure

describe('a change of intent on a failed machine', () => {
  it('wake on a retryable failure in backoff: the reconciler acts at once', () => {
    const m = machine({ ...machineIn('failed:retryable', 'sleeping'), nextAttemptAt: NOW + 30_000, attempts: 4 });
    const patch = decideAction(m, 'wake', NOW).patch;
    expect(patch).not.toBeNull();
    const next = applyPatch(m, patch ?? {}, 8, NOW);
    expect(planStep(next, NOW)).toEqual({ kind: 'place', preferredHostId: HOST });
  });

  it('wake on a non-retryable failure: retried', () => {
    const m = machineIn('failed:non-retryable', 'sleeping');
    const next = applyPatch(m, decideAction(m, 'wake', NOW).patch ?? {}, 8, NOW);
    expect(planStep(next, NOW)).toEqual({ kind: 'place', preferredHostId: HOST });
  });

  it('delete on a non-retryable failure: destroyed', () => {
    const m = machineIn('failed:non-retryable', 'running');
    const next = applyPatch(m, decideAction(m, 'delete', NOW).patch ?? {}, 8, NOW);
    expectStep(planStep(next, NOW), DESTROYING);
  });
});

// ---------------------------------------------------------------------------
// Whole journeys: the phase sequences the contract lists

/** Plays the reconciler with a runtime that always succeeds; returns each committed machine. */
function drive(start: Machine, chooseHost: (preferred: string | null) => string | null = (p) => p ?? HOST): Machine[] {
  const seen = [start];
  let m = start;
  for (let i = 0; i < 20; i++) {
    const step = planStep(m, NOW);
    let patch: MachinePatch | null;
    switch (step.kind) {
      case 'idle':
        return seen;
      case 'transition':
        patch = step.patch;
        break;
      case 'runtime':
        patch = step.success;
        break;
      case 'place':
        patch = placementPatch(m, chooseHost(step.preferredHostId), true);
        if (patch === null) return seen;
        break;
    }
    m = applyPatch(m, patch, m.revision + 1, NOW);
    seen.push(m);
  }
  throw new Error('no convergence after 20 steps');
}

const phases = (ms: readonly Machine[]): Phase[] => ms.map((m) => m.phase).filter((p, i, all) => i === 0 || all[i - 1] !== p);

describe('journeys', () => {
  it('create: accepted -> placement_pending -> starting -> running', () => {
    const created = machine({ phase: 'accepted', reason: 'Accepted', hostId: null, applied: null, lastActivityAt: NOW });
    const seen = drive(created);
    expect(phases(seen)).toEqual(['accepted', 'placement_pending', 'starting', 'running']);
    const last = seen.at(-1)!;
    expect(last).toMatchObject({ reason: 'Started', hostId: HOST, applied: SIZES });
    expect(isConverged(last)).toBe(true);
    const revisions = seen.map((m) => m.revision);
    expect(revisions).toEqual([...revisions].sort((a, b) => a - b));
    expect(new Set(revisions).size).toBe(revisions.length);
  });

  it('create with no host: waits in placement_pending (NoReadyHosts)', () => {
    const created = machine({ phase: 'accepted', hostId: null, applied: null, lastActivityAt: NOW });
    const last = drive(created, () => null).at(-1)!;
    expect(last).toMatchObject({ phase: 'placement_pending', reason: 'NoReadyHosts', hostId: null });
  });

  it('sleep: running -> stopping -> sleeping', () => {
    const m = machine();
    const asked = applyPatch(m, decideAction(m, 'sleep', NOW).patch ?? {}, 8, NOW);
    const seen = drive(asked);
    expect(phases(seen)).toEqual(['running', 'stopping', 'sleeping']);
    expect(seen.map((s) => s.reason)).toEqual(['SleepRequested', 'SleepRequested', 'Stopped']);
    expect(seen.at(-1)).toMatchObject({ hostId: HOST, applied: null });
    expect(isConverged(seen.at(-1)!)).toBe(true);
  });

  it('autosleep: running -> stopping -> sleeping, reason Autosleep', () => {
    const seen = drive(machine({ lastActivityAt: NOW - 600_000 }));
    expect(phases(seen)).toEqual(['running', 'stopping', 'sleeping']);
    expect(seen[1]).toMatchObject({ desiredState: 'sleeping', reason: 'Autosleep' });
    expect(seen.at(-1)).toMatchObject({ phase: 'sleeping', desiredState: 'sleeping' });
  });

  it('wake: sleeping -> starting -> running on its host, with sizes changed while asleep', () => {
    const asleep = machine({ phase: 'sleeping', desiredState: 'sleeping', reason: 'Stopped', applied: null });
    const resized = applyPatch(asleep, decideUpdate(asleep, { vcpu: 2 }, NOW).patch ?? {}, 8, NOW);
    const woken = applyPatch(resized, decideAction(resized, 'wake', NOW).patch ?? {}, 9, NOW);
    const seen = drive(woken, (preferred) => preferred);
    expect(phases(seen)).toEqual(['sleeping', 'starting', 'running']);
    expect(seen.at(-1)).toMatchObject({ hostId: HOST, applied: { vcpu: 2, memoryMib: 1024, storageGib: 10 } });
  });

  it('wake with its host gone: sleeping -> placement_pending -> starting -> running', () => {
    const asleep = machine({ phase: 'sleeping', desiredState: 'sleeping', applied: null });
    const woken = applyPatch(asleep, decideAction(asleep, 'wake', NOW).patch ?? {}, 8, NOW);
    let attempts = 0;
    const seen = drive(woken, () => (attempts++ === 0 ? null : 'host-b'));
    expect(phases(seen)).toEqual(['sleeping', 'placement_pending', 'starting', 'running']);
    expect(seen.at(-1)?.hostId).toBe('host-b');
  });

  it.each(['accepted', 'placement_pending', 'starting', 'running', 'stopping', 'sleeping'] as const)(
    'delete from %s: -> destroying -> destroyed',
    (phase) => {
      const m = machineIn(phase, 'running');
      const deleted = applyPatch(m, decideAction(m, 'delete', NOW).patch ?? {}, 8, NOW);
      const seen = drive(deleted);
      expect(phases(seen)).toEqual([phase, 'destroying', 'destroyed']);
      expect(seen.at(-1)).toMatchObject({ reason: 'Destroyed', hostId: null, applied: null, destroyedAt: NOW });
      expect(endsStream(seen.at(-1)!)).toBe(true);
    },
  );
});
