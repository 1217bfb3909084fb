/**
 * One execution this process is responsible for, from creation to its end:
 * its status, its output, and its writes to the store. Writes go through one
 * promise chain and take their sequence numbers when queued, so events reach
 * the store in sequence order and the terminal status is written last.
 */
import type { Logger } from 'pino';
import type { EventType, Execution, ExecutionEventRecord, ExecutionStatus } from '../domain/executions.js';
import { isTerminal } from '../domain/executions.js';
import type { ExecHandle, ExecRequest } from '../runtime/runtime.js';
import type { ExecutionsStore, ExecutionUpdate } from '../store/executions-store.js';
import type { Store } from '../store/store.js';
import { OutputCapture } from './output-capture.js';

export interface RunDeps {
  readonly executions: ExecutionsStore;
  readonly machines: Pick<Store, 'touchActivity'>;
  readonly clock: () => number;
  readonly log: Logger;
  /** Output is written as events at most this often (coalesced in between). */
  readonly flushMs: number;
  readonly outputLimitBytes: number;
}

/** How an execution ends. */
export interface Outcome {
  readonly status: ExecutionStatus;
  readonly exitCode?: number | null;
  readonly signal?: number | null;
  readonly errorCode?: string | null;
  readonly errorMessage?: string | null;
}

export class Run {
  private current: Execution;
  readonly capture: OutputCapture;
  /** Last sequence number handed out (the creation event is 1). */
  private seq = 1;
  private writes: Promise<void> = Promise.resolve();
  private flushTimer: NodeJS.Timeout | null = null;
  private activityTimer: NodeJS.Timeout | null = null;
  private ended = false;
  private resolveFinished!: (e: Execution) => void;
  /** Settles with the stored terminal state. */
  readonly finished: Promise<Execution>;
  handle: ExecHandle | null = null;
  /** Set when someone (DELETE, a destroyed machine, shutdown) ends it before the command does. */
  stopReason: Outcome | null = null;

  constructor(
    private readonly deps: RunDeps,
    initial: Execution,
    /** Held in memory only: env values and stdin are never stored. */
    readonly request: ExecRequest,
    /** Pending executions that have not started by then expire. */
    readonly startDeadline: number,
  ) {
    this.current = initial;
    this.capture = new OutputCapture(deps.outputLimitBytes);
    this.finished = new Promise((r) => (this.resolveFinished = r));
  }

  get executionId(): string {
    return this.current.executionId;
  }

  get machineId(): string {
    return this.current.machineId;
  }

  get isEnded(): boolean {
    return this.ended;
  }

  /** The execution as a reader should see it now, live byte counts included. */
  view(): Execution {
    return { ...this.current, ...this.capture.totals() };
  }

  readonly onOutput = (stream: 'stdout' | 'stderr', chunk: Buffer): void => {
    if (this.ended) return;
    this.capture.add(stream, chunk);
    if (this.current.status === 'running' && this.flushTimer === null && this.capture.hasPending) {
      this.flushTimer = setTimeout(() => {
        this.flushTimer = null;
        this.flush();
      }, this.deps.flushMs);
    }
  };

  /** The command runs: record it, and keep the machine awake while it does. */
  started(activityEveryMs: number): void {
    if (this.ended) return;
    const now = this.deps.clock();
    this.current = { ...this.current, status: 'running', startedAt: now };
    this.enqueueUpdate({ status: 'running', startedAt: now }, this.event('lifecycle', now, { status: 'running' }));
    // Output that arrived before the start was recorded goes right after it.
    this.flush();
    this.activityTimer = setInterval(() => {
      this.deps.machines.touchActivity(this.machineId, this.deps.clock()).catch((err: unknown) => this.deps.log.warn({ err }, 'cannot record execution activity'));
    }, activityEveryMs);
    this.activityTimer.unref();
  }

  /** Ends it (first call wins): writes the remaining output, then the terminal status. */
  finish(outcome: Outcome): Promise<Execution> {
    if (this.ended) return this.finished;
    this.ended = true;
    if (this.flushTimer !== null) clearTimeout(this.flushTimer);
    if (this.activityTimer !== null) clearInterval(this.activityTimer);
    this.capture.end();
    this.flush();
    const now = this.deps.clock();
    const totals = this.capture.totals();
    const ended = {
      status: outcome.status,
      completedAt: now,
      exitCode: outcome.exitCode ?? null,
      signal: outcome.signal ?? null,
      errorCode: outcome.errorCode ?? null,
      errorMessage: outcome.errorMessage ?? null,
    };
    this.current = { ...this.current, ...totals, ...ended };
    const update: ExecutionUpdate = { ...ended, output: { ...totals, stdout: this.capture.text('stdout'), stderr: this.capture.text('stderr') } };
    this.enqueueUpdate(update, this.event('lifecycle', now, outcome));
    void this.writes.then(() => this.resolveFinished(this.current));
    return this.finished;
  }

  private flush(): void {
    const chunks = this.capture.takePending();
    if (chunks.length === 0) return;
    const now = this.deps.clock();
    const events = chunks.map((c) => this.event(c.stream, now, { chunk: c.text }));
    this.enqueue(() => this.deps.executions.appendEvents(events));
  }

  private event(type: EventType, at: number, fields: Partial<Outcome> & { chunk?: string }): ExecutionEventRecord {
    this.seq += 1;
    const status = fields.status ?? null;
    return {
      executionId: this.executionId,
      sequence: this.seq,
      type,
      at,
      status,
      chunk: fields.chunk ?? null,
      exitCode: fields.exitCode ?? null,
      signal: fields.signal ?? null,
      errorCode: fields.errorCode ?? null,
      // Only failures explain themselves; a lifecycle event of a running command carries just its status.
      errorMessage: status !== null && isTerminal(status) ? (fields.errorMessage ?? null) : null,
    };
  }

  private enqueueUpdate(update: ExecutionUpdate, event: ExecutionEventRecord): void {
    this.enqueue(() => this.deps.executions.update(this.executionId, update, event));
  }

  private enqueue(write: () => Promise<void>): void {
    this.writes = this.writes.then(write).catch((err: unknown) => {
      // The store is unreachable: the in-memory state stays right; readers see it once writes work again for later events.
      this.deps.log.error({ err, executionId: this.executionId }, 'cannot write execution state');
    });
  }
}
