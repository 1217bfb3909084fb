/**
 * Core vocabulary, named as the DCS contract names it. Pure data: no I/O.
 * Times are epoch milliseconds internally and RFC 3339 only on the wire.
 */

export const PHASES = [
  'accepted',
  'placement_pending',
  'starting',
  'running',
  'stopping',
  'sleeping',
  'destroying',
  'destroyed',
  'failed',
] as const;
export type Phase = (typeof PHASES)[number];

export const DESIRED_STATES = ['running', 'sleeping', 'destroyed'] as const;
export type DesiredState = (typeof DESIRED_STATES)[number];

export interface Sizes {
  readonly vcpu: number;
  readonly memoryMib: number;
  readonly storageGib: number;
}

/** A machine as stored. Rows read from the store are never modified: build a new object. */
export interface Machine extends Sizes {
  readonly machineId: string;
  readonly orgId: string;
  readonly autosleepSeconds: number;
  readonly desiredState: DesiredState;
  readonly phase: Phase;
  readonly reason: string;
  readonly retryable: boolean;
  readonly lastError: string | null;
  readonly revision: number;
  readonly lastTransitionAt: number;
  readonly lastProgressAt: number;
  readonly createdAt: number;
  /** Host the machine is placed on; null while unplaced. */
  readonly hostId: string | null;
  /** Sizes the runtime has applied to the sandbox; null while nothing runs. */
  readonly applied: Sizes | null;
  /** Consecutive failed attempts of the current step (drives backoff). */
  readonly attempts: number;
  /** Earliest time the reconciler may retry after a failure. */
  readonly nextAttemptAt: number | null;
  /** Last user activity (mutations, executions): the autosleep clock. */
  readonly lastActivityAt: number;
  readonly destroyedAt: number | null;
  /** Highest revision of this machine dropped from the event log by retention. */
  readonly logCompactedRevision: number;
}

/** The fields a transition may change; revision and progress time are the store's. */
export type MachinePatch = Partial<
  Omit<Machine, 'machineId' | 'orgId' | 'revision' | 'lastProgressAt' | 'createdAt' | 'logCompactedRevision'>
>;

/** Wire shape: LifecycleStatus of the reference. */
export interface LifecycleStatus {
  phase: Phase;
  reason: string;
  retryable: boolean;
  revision: string;
  last_transition_at: string;
  last_progress_at: string;
  last_error?: string;
}

/** Wire shape: LifecycleResponse of the reference. */
export interface LifecycleResponse {
  machine_id: string;
  vcpu: number;
  memory_mib: number;
  storage_gib: number;
  autosleep_seconds: number;
  desired_state: DesiredState;
  status: LifecycleStatus;
}

/** Wire shape: MachineListItem of the reference. */
export interface MachineListItem extends LifecycleResponse {
  created_at: string;
}

let lastMs = Number.NaN;
let lastText = '';

/** Consecutive calls often format the same instant (a commit's transition and progress times, a group's commits). */
export function rfc3339(ms: number): string {
  if (ms !== lastMs) {
    lastText = new Date(ms).toISOString();
    lastMs = ms;
  }
  return lastText;
}

export function toLifecycleResponse(m: Machine): LifecycleResponse {
  const status: LifecycleStatus = {
    phase: m.phase,
    reason: m.reason,
    retryable: m.retryable,
    revision: String(m.revision),
    last_transition_at: rfc3339(m.lastTransitionAt),
    last_progress_at: rfc3339(m.lastProgressAt),
  };
  if (m.lastError !== null) status.last_error = m.lastError;
  return {
    machine_id: m.machineId,
    vcpu: m.vcpu,
    memory_mib: m.memoryMib,
    storage_gib: m.storageGib,
    autosleep_seconds: m.autosleepSeconds,
    desired_state: m.desiredState,
    status,
  };
}

export function toMachineListItem(m: Machine): MachineListItem {
  return { ...toLifecycleResponse(m), created_at: rfc3339(m.createdAt) };
}

export function assertNever(value: never, what = 'value'): never {
  throw new Error(`unhandled ${what}: ${String(value)}`);
}
