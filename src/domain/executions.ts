/**
 * Executions: commands run inside a machine (argv, no shell). Pure data and
 * decisions; the service (src/executions/) runs them, the store keeps them.
 *
 *   wake_in_progress  created on a sleeping machine; the wake is committed and
 *                     the command starts once the machine runs
 *   queued            the machine is being created or started; same as above
 *   running           the command runs
 *   succeeded         it exited 0
 *   failed            non-zero exit, a signal, a timeout (error_code
 *                     EXECUTION_TIMEOUT), a start error (EXECUTABLE_NOT_FOUND...),
 *                     the machine went away, or the controlplane restarted
 *   cancelled         DELETE before it ended
 *   expired           it never started: the machine did not run within the
 *                     start deadline
 */
import { ApiError } from './errors.js';
import { uuidv7 } from './ids.js';
import type { Machine } from './types.js';
import { rfc3339 } from './types.js';

export const EXECUTION_STATUSES = ['wake_in_progress', 'queued', 'running', 'succeeded', 'failed', 'cancelled', 'expired'] as const;
export type ExecutionStatus = (typeof EXECUTION_STATUSES)[number];

export const TERMINAL_STATUSES: readonly ExecutionStatus[] = ['succeeded', 'failed', 'cancelled', 'expired'];
export const PENDING_STATUSES: readonly ExecutionStatus[] = ['wake_in_progress', 'queued'];
export const ACTIVE_STATUSES: readonly ExecutionStatus[] = ['wake_in_progress', 'queued', 'running'];

export function isTerminal(s: ExecutionStatus): boolean {
  return TERMINAL_STATUSES.includes(s);
}

/** Stable error codes an execution can end with (besides the runtime's start errors). */
export const EXECUTION_ERRORS = {
  timeout: 'EXECUTION_TIMEOUT',
  cancelled: 'EXECUTION_CANCELLED',
  restarted: 'CONTROLPLANE_RESTARTED',
  shutdown: 'CONTROLPLANE_SHUTDOWN',
  machineGone: 'MACHINE_DESTROYED',
  machineFailed: 'MACHINE_FAILED',
  machineAsleep: 'MACHINE_NOT_RUNNING',
  startDeadline: 'START_DEADLINE_EXCEEDED',
  runtimeUnsupported: 'EXEC_UNSUPPORTED',
} as const;

export type StreamName = 'stdout' | 'stderr';

export interface OutputTotals {
  readonly stdoutBytes: number;
  readonly stderrBytes: number;
  readonly stdoutTruncated: boolean;
  readonly stderrTruncated: boolean;
}

/** An execution as stored. Env values and stdin are never stored: only what may be shown. */
export interface Execution extends OutputTotals {
  readonly executionId: string;
  readonly machineId: string;
  readonly orgId: string;
  /** Process (replica) that runs it: only it can run or kill it. */
  readonly owner: string;
  readonly status: ExecutionStatus;
  readonly command: readonly string[];
  readonly cwd: string | null;
  readonly envKeys: readonly string[] | null;
  readonly timeoutMs: number | null;
  readonly exitCode: number | null;
  readonly signal: number | null;
  readonly errorCode: string | null;
  readonly errorMessage: string | null;
  readonly createdAt: number;
  readonly startedAt: number | null;
  readonly completedAt: number | null;
}

export type EventType = 'lifecycle' | StreamName;

export interface ExecutionEventRecord {
  readonly executionId: string;
  readonly sequence: number;
  readonly type: EventType;
  readonly at: number;
  readonly status: ExecutionStatus | null;
  readonly chunk: string | null;
  readonly exitCode: number | null;
  readonly signal: number | null;
  readonly errorCode: string | null;
  readonly errorMessage: string | null;
}

export function newExecutionId(now?: number): string {
  return `ex-${uuidv7(now)}`;
}

// --- wire shapes (the reference's ExecutionResponse, ExecutionEvent, ExecutionOutputResponse) ---

/** An execution as create stores it: nothing run yet, no output. Only the env's keys are kept. */
export function newExecution(opts: {
  executionId: string;
  machineId: string;
  orgId: string;
  owner: string;
  status: ExecutionStatus;
  command: readonly string[];
  cwd?: string | undefined;
  env?: Readonly<Record<string, string>> | undefined;
  timeoutMs?: number | undefined;
  now: number;
}): Execution {
  return {
    executionId: opts.executionId,
    machineId: opts.machineId,
    orgId: opts.orgId,
    owner: opts.owner,
    status: opts.status,
    command: [...opts.command],
    cwd: opts.cwd ?? null,
    envKeys: opts.env === undefined ? null : Object.keys(opts.env).sort(),
    timeoutMs: opts.timeoutMs ?? null,
    exitCode: null,
    signal: null,
    errorCode: null,
    errorMessage: null,
    stdoutBytes: 0,
    stderrBytes: 0,
    stdoutTruncated: false,
    stderrTruncated: false,
    createdAt: opts.now,
    startedAt: null,
    completedAt: null,
  };
}

export interface ExecutionResponse {
  execution_id: string;
  machine_id: string;
  status: ExecutionStatus;
  command: string[];
  created_at: string;
  cwd?: string;
  env_keys?: string[];
  exit_code?: number;
  signal?: number;
  started_at?: string;
  completed_at?: string;
  stdout_bytes?: number;
  stderr_bytes?: number;
  stdout_truncated?: boolean;
  stderr_truncated?: boolean;
  error_code?: string;
  error_message?: string;
  retry_after_ms?: number;
}

export interface ExecutionEventWire {
  sequence: number;
  type: EventType;
  at: string;
  status?: ExecutionStatus;
  chunk?: string;
  exit_code?: number;
  signal?: number;
  error_code?: string;
  error_message?: string;
}

export interface ExecutionOutputResponse {
  execution_id: string;
  stdout: string;
  stderr: string;
  stdout_bytes: number;
  stderr_bytes: number;
  stdout_truncated: boolean;
  stderr_truncated: boolean;
}

/** How long a client should wait before polling a pending execution again. */
export const PENDING_RETRY_AFTER_MS = 250;

export function toExecutionResponse(e: Execution): ExecutionResponse {
  const r: ExecutionResponse = {
    execution_id: e.executionId,
    machine_id: e.machineId,
    status: e.status,
    command: [...e.command],
    created_at: rfc3339(e.createdAt),
    stdout_bytes: e.stdoutBytes,
    stderr_bytes: e.stderrBytes,
    stdout_truncated: e.stdoutTruncated,
    stderr_truncated: e.stderrTruncated,
  };
  if (e.cwd !== null) r.cwd = e.cwd;
  if (e.envKeys !== null) r.env_keys = [...e.envKeys];
  if (e.exitCode !== null) r.exit_code = e.exitCode;
  if (e.signal !== null) r.signal = e.signal;
  if (e.startedAt !== null) r.started_at = rfc3339(e.startedAt);
  if (e.completedAt !== null) r.completed_at = rfc3339(e.completedAt);
  if (e.errorCode !== null) r.error_code = e.errorCode;
  if (e.errorMessage !== null) r.error_message = e.errorMessage;
  if (PENDING_STATUSES.includes(e.status)) r.retry_after_ms = PENDING_RETRY_AFTER_MS;
  return r;
}

export function toEventWire(ev: ExecutionEventRecord): ExecutionEventWire {
  const w: ExecutionEventWire = { sequence: ev.sequence, type: ev.type, at: rfc3339(ev.at) };
  if (ev.status !== null) w.status = ev.status;
  if (ev.chunk !== null) w.chunk = ev.chunk;
  if (ev.exitCode !== null) w.exit_code = ev.exitCode;
  if (ev.signal !== null) w.signal = ev.signal;
  if (ev.errorCode !== null) w.error_code = ev.errorCode;
  if (ev.errorMessage !== null) w.error_message = ev.errorMessage;
  return w;
}

// --- validation of a create request beyond its JSON schema ---

export interface CreateExecutionInput {
  readonly command: readonly string[] | null;
  readonly cwd?: string | undefined;
  readonly env?: Readonly<Record<string, string>> | undefined;
  readonly stdin?: string | undefined;
  readonly timeout_ms?: number | undefined;
}

/** Field -> problem, in the contract's `details` form; empty when the request is good. */
export function validateCreate(body: CreateExecutionInput, stdinLimitBytes: number): Record<string, string> {
  const details: Record<string, string> = {};
  const argv = body.command;
  if (argv === null || argv.length === 0) details['body.command'] = 'must be a non-empty array of strings (argv; no shell)';
  else if (argv.some((a) => a === '')) details['body.command'] = 'must not contain empty strings';
  else if (argv.some((a) => a.includes('\0'))) details['body.command'] = 'must not contain NUL characters';
  if (body.cwd !== undefined && (body.cwd === '' || body.cwd.includes('\0'))) details['body.cwd'] = 'must be a non-empty path';
  for (const [k, v] of Object.entries(body.env ?? {})) {
    if (k === '' || k.includes('=') || k.includes('\0') || v.includes('\0')) {
      details['body.env'] = 'names must be non-empty without "=" or NUL; values without NUL';
      break;
    }
  }
  if (body.stdin !== undefined && Buffer.byteLength(body.stdin, 'utf8') > stdinLimitBytes) {
    details['body.stdin'] = `must be at most ${stdinLimitBytes} bytes`;
  }
  if (body.timeout_ms !== undefined && body.timeout_ms <= 0) details['body.timeout_ms'] = 'must be positive';
  return details;
}

// --- admission: what creating an execution does to its machine ---

/**
 * - `run`: the machine runs; start now.
 * - `queue`: it is on its way to running (accepted, placement, starting, a retryable failure).
 * - `wake`: it sleeps or is going to; commit a wake, then wait.
 */
export type Admission = 'run' | 'queue' | 'wake';

function invalidState(m: Machine, why: string): ApiError {
  return new ApiError('INVALID_STATE', `cannot run a command on this machine: ${why}`, {
    details: { current_desired_state: m.desiredState, current_observed_state: m.phase, expected_observed_state: 'running' },
  });
}

export function decideAdmission(m: Machine): Admission {
  if (m.desiredState === 'destroyed' || m.phase === 'destroying' || m.phase === 'destroyed') throw invalidState(m, 'it is destroyed');
  if (m.phase === 'failed' && !m.retryable) throw invalidState(m, 'it failed and will not be retried');
  if (m.desiredState === 'sleeping') return 'wake';
  if (m.phase === 'running') return 'run';
  if (m.phase === 'sleeping' || m.phase === 'stopping') return 'wake';
  return 'queue';
}

/** While waiting: whether the machine can still come to run, and if not, why. */
export function waitOutcome(m: Machine | undefined): 'run' | 'wait' | { code: string; message: string } {
  if (m === undefined || m.desiredState === 'destroyed' || m.phase === 'destroying' || m.phase === 'destroyed') {
    return { code: EXECUTION_ERRORS.machineGone, message: 'the machine was destroyed before the command could start' };
  }
  if (m.phase === 'failed' && !m.retryable) {
    return { code: EXECUTION_ERRORS.machineFailed, message: `the machine failed before the command could start: ${m.lastError ?? m.reason}` };
  }
  if (m.desiredState === 'sleeping') {
    return { code: EXECUTION_ERRORS.machineAsleep, message: 'the machine was put to sleep before the command could start' };
  }
  return m.phase === 'running' ? 'run' : 'wait';
}

/** How often a running execution renews its machine's activity: well inside the autosleep window. */
export function activityIntervalMs(autosleepSeconds: number): number {
  const cap = 10_000;
  if (autosleepSeconds <= 0) return cap;
  return Math.max(250, Math.min(cap, Math.floor((autosleepSeconds * 1000) / 3)));
}

/** `MachineNotRunning` -> `MACHINE_NOT_RUNNING`: runtime reasons in the error_code vocabulary. */
export function errorCodeOf(reason: string): string {
  return reason.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}
