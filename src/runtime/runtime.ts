/**
 * What the reconciler needs from a place that runs machines. Every operation
 * is idempotent: the reconciler may repeat one after a crash or a timeout.
 */
import type { Host } from '../domain/placement.js';
import type { Sizes } from '../domain/types.js';

export interface SandboxSpec {
  readonly machineId: string;
  readonly hostId: string;
  readonly sizes: Sizes;
}

/** What the runtime holds for a machine right now. */
export type ObservedState = 'running' | 'sleeping' | 'absent';

export interface Observation {
  readonly state: ObservedState;
  /** The host is gone (lost, drained): the machine must be placed elsewhere. */
  readonly hostGone: boolean;
  readonly detail?: string;
}

/** A failed runtime operation, in the contract's failure vocabulary. */
export class RuntimeError extends Error {
  /** Stable CamelCase reason for status.reason; undefined: the step's own failure reason. */
  readonly reason: string | undefined;
  readonly retryable: boolean;

  constructor(message: string, opts: { retryable: boolean; reason?: string }) {
    super(message);
    this.name = 'RuntimeError';
    this.retryable = opts.retryable;
    this.reason = opts.reason;
  }
}

export interface Runtime {
  readonly kind: string;
  /** The hosts machines may be placed on, with their capacity. */
  hosts(): Promise<Host[]>;
  /** Boots the sandbox, or thaws it when asleep. Running already: nothing to do. */
  start(spec: SandboxSpec): Promise<void>;
  /** Puts the sandbox to sleep (no compute; storage kept). */
  stop(machineId: string): Promise<void>;
  /** Applies new sizes to a running sandbox. */
  resize(spec: SandboxSpec): Promise<void>;
  /** Removes the sandbox and its storage. Absent already: nothing to do. */
  destroy(machineId: string): Promise<void>;
  inspect(machineId: string, hostId: string): Promise<Observation>;
  /**
   * After a controlplane restart: the machines the store believes are on
   * this runtime. The runtime finds them again (and may clean up what the
   * store does not know).
   */
  recover(expected: readonly { machineId: string; hostId: string; state: 'running' | 'sleeping'; sizes: Sizes }[]): Promise<void>;
  /** Registers a callback for sandboxes that die on their own, so the reconciler looks at once. */
  onSandboxExit(listener: (machineId: string) => void): void;
  close(): Promise<void>;
}

/** A command to run inside a machine (executions API). argv, no shell. */
export interface ExecRequest {
  readonly argv: readonly string[];
  readonly cwd?: string;
  readonly env?: Readonly<Record<string, string>>;
  readonly stdin?: string;
  /** Killed (process group) after this long; undefined: no limit. */
  readonly timeoutMs?: number;
}

export interface ExecResult {
  /** Exit status when the process exited normally. */
  readonly exitCode: number | null;
  /** Signal number when it was killed by one. */
  readonly signal: number | null;
  readonly timedOut: boolean;
  /** The command could not be started (missing executable, bad cwd): code + message. */
  readonly startError?: { readonly code: string; readonly message: string };
}

export interface ExecHandle {
  /** Settles when the process (group) is gone. Never rejects. */
  readonly done: Promise<ExecResult>;
  /** Kills the whole process group (SIGKILL). Idempotent. */
  kill(): void;
}

export type OutputListener = (stream: 'stdout' | 'stderr', chunk: Buffer) => void;

/** Runtimes that can run commands in a running machine. */
export interface ExecRuntime {
  exec(machineId: string, req: ExecRequest, onOutput: OutputListener): Promise<ExecHandle>;
}

export function canExec(runtime: Runtime): runtime is Runtime & ExecRuntime {
  return typeof (runtime as Partial<ExecRuntime>).exec === 'function';
}
