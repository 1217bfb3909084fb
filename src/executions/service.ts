/**
 * The execution service: admits an execution on a machine (waking it when it
 * sleeps), starts it once the machine runs, captures its output, ends it
 * (exit, timeout, cancel, machine destroyed, shutdown) and answers reads.
 *
 * Waiting for a machine is level-triggered: a change of the machine (from the
 * change feed) or a slow recheck re-reads it from the store and decides, so a
 * missed notification only delays a start, never loses it.
 *
 * Only this process can run or kill the executions it owns (`owner`, the
 * replica id). At start-up, executions it left unfinished (the process died)
 * are marked failed with CONTROLPLANE_RESTARTED: their processes died with
 * the pipes to us, and their env values and stdin were never stored, so they
 * cannot be resumed.
 */
import type { Logger } from 'pino';
import { ApiError, machineNotFound } from '../domain/errors.js';
import type { Admission, CreateExecutionInput, Execution, ExecutionEventRecord, ExecutionStatus } from '../domain/executions.js';
import { activityIntervalMs, decideAdmission, errorCodeOf, EXECUTION_ERRORS, isTerminal, newExecution, newExecutionId, waitOutcome } from '../domain/executions.js';
import { decideAction } from '../domain/lifecycle.js';
import type { Machine } from '../domain/types.js';
import type { ChangeFeed } from '../events/change-feed.js';
import type { ExecResult, Runtime } from '../runtime/runtime.js';
import { canExec, RuntimeError } from '../runtime/runtime.js';
import type { EventPage, ExecutionPage } from '../store/executions-store.js';
import { ExecutionsStore } from '../store/executions-store.js';
import type { Store } from '../store/store.js';
import type { SqlStore } from '../store/sql-store.js';
import type { Outcome } from './run.js';
import { Run } from './run.js';

export interface ExecutionServiceOptions {
  readonly store: Store & Pick<SqlStore, 'db' | 'dialect'>;
  readonly feed: Pick<ChangeFeed, 'subscribe'>;
  readonly runtime: Runtime;
  readonly log: Logger;
  readonly outputLimitBytes: number;
  /** Replica id: whose unfinished executions to clean up at start-up. */
  readonly owner: string;
  readonly clock?: () => number;
  /** A pending execution whose machine does not run by then expires. */
  readonly startDeadlineMs?: number;
  readonly flushMs?: number;
  /** Pending executions re-read their machine this often (a safety net for missed feed events). */
  readonly recheckMs?: number;
}

const DEFAULT_START_DEADLINE_MS = 10 * 60_000;
const DEFAULT_FLUSH_MS = 50;
const DEFAULT_RECHECK_MS = 1000;
/** Shutdown waits this long for killed commands to be reaped and written. */
const STOP_GRACE_MS = 5000;

/** Executions of one machine this process waits on or runs, and its feed subscription. */
interface MachineWatch {
  readonly pending: Run[];
  readonly running: Set<Run>;
  unsubscribe: () => void;
  timer: NodeJS.Timeout;
  checking: boolean;
  checkAgain: boolean;
}

export class ExecutionService {
  readonly executions: ExecutionsStore;
  private readonly store: Store;
  private readonly runtime: Runtime;
  private readonly log: Logger;
  private readonly clock: () => number;
  private readonly active = new Map<string, Run>();
  private readonly watches = new Map<string, MachineWatch>();
  private stopping = false;
  private readonly tails = new Set<Promise<void>>();

  constructor(private readonly opts: ExecutionServiceOptions) {
    this.executions = new ExecutionsStore(opts.store);
    this.store = opts.store;
    this.runtime = opts.runtime;
    this.log = opts.log;
    this.clock = opts.clock ?? Date.now;
  }

  /** Marks what a previous life of this process left unfinished as failed. */
  async start(): Promise<void> {
    const left = await this.executions.listUnfinished(this.opts.owner);
    for (const e of left) {
      await this.finishElsewhere(e, {
        status: 'failed',
        errorCode: EXECUTION_ERRORS.restarted,
        errorMessage: 'the controlplane restarted while this execution was pending or running',
      });
    }
    if (left.length > 0) this.log.warn({ count: left.length }, 'marked executions left by a previous run as failed');
  }

  /** Ends everything in flight (killed commands are reaped and written) before the store closes. */
  async stop(): Promise<void> {
    this.stopping = true;
    const reason: Outcome = { status: 'failed', errorCode: EXECUTION_ERRORS.shutdown, errorMessage: 'the controlplane shut down while this execution was pending or running' };
    const runs = [...this.active.values()];
    for (const run of runs) this.stopRun(run, reason);
    const grace = new Promise<void>((r) => setTimeout(r, STOP_GRACE_MS).unref());
    await Promise.race([Promise.all(runs.map((r) => r.finished)).then(() => Promise.all([...this.tails])), grace]);
    for (const w of this.watches.values()) {
      w.unsubscribe();
      clearInterval(w.timer);
    }
    this.watches.clear();
  }

  /** Creates an execution (the request is valid); wakes the machine if it sleeps. */
  async create(machine: Machine, body: CreateExecutionInput): Promise<Execution> {
    if (this.stopping) throw new ApiError('DEPENDENCY_UNAVAILABLE', 'the server is shutting down', { retryAfterMs: 1000 });
    const now = this.clock();
    const { machine: m, admission } = await this.admit(machine, now);
    const status: ExecutionStatus = admission === 'wake' ? 'wake_in_progress' : 'queued';
    const env = body.env ?? undefined;
    const e: Execution = newExecution({
      executionId: newExecutionId(now),
      machineId: m.machineId,
      orgId: m.orgId,
      owner: this.opts.owner,
      status,
      command: body.command ?? [],
      cwd: body.cwd,
      env,
      timeoutMs: body.timeout_ms,
      now,
    });
    const first: ExecutionEventRecord = {
      executionId: e.executionId,
      sequence: 1,
      type: 'lifecycle',
      at: now,
      status,
      chunk: null,
      exitCode: null,
      signal: null,
      errorCode: null,
      errorMessage: null,
    };
    await this.executions.insert(e, first);
    await this.store.touchActivity(m.machineId, now);

    const run = new Run(
      {
        executions: this.executions,
        machines: this.store,
        clock: this.clock,
        log: this.log,
        flushMs: this.opts.flushMs ?? DEFAULT_FLUSH_MS,
        outputLimitBytes: this.opts.outputLimitBytes,
      },
      e,
      {
        argv: e.command,
        ...(body.cwd !== undefined ? { cwd: body.cwd } : {}),
        ...(env !== undefined ? { env } : {}),
        ...(body.stdin !== undefined ? { stdin: body.stdin } : {}),
        ...(body.timeout_ms !== undefined ? { timeoutMs: body.timeout_ms } : {}),
      },
      now + (this.opts.startDeadlineMs ?? DEFAULT_START_DEADLINE_MS),
    );
    this.active.set(e.executionId, run);
    const w = this.watch(m.machineId);
    if (admission === 'run') {
      // Started before answering, so the answer says running (or why it could not start).
      await this.launch(run, m);
    } else {
      w.pending.push(run);
      void this.check(m.machineId);
    }
    return run.view();
  }

  async get(executionId: string): Promise<Execution | undefined> {
    return this.active.get(executionId)?.view() ?? (await this.executions.get(executionId));
  }

  list(machineId: string, afterId: string | null, limit: number): Promise<ExecutionPage> {
    return this.executions.list(machineId, afterId, limit).then((page) => ({
      ...page,
      items: page.items.map((e) => this.active.get(e.executionId)?.view() ?? e),
    }));
  }

  /**
   * A page of events, and whether the execution has ended as far as the store
   * knows. The status is read before the events: a terminal status is
   * committed with the last event, so when it is seen no event can follow.
   * (The in-memory status may run ahead of the store's, so it is not used here.)
   */
  async events(executionId: string, afterSequence: number, limit: number): Promise<EventPage & { ended: boolean }> {
    const stored = await this.executions.get(executionId);
    const page = await this.executions.events(executionId, afterSequence, limit);
    return { ...page, ended: stored !== undefined && isTerminal(stored.status) };
  }

  /** Kept output: live for a running execution, from the store once it ended. */
  async output(e: Execution): Promise<{ stdout: string; stderr: string }> {
    const run = this.active.get(e.executionId);
    if (run !== undefined) return { stdout: run.capture.text('stdout'), stderr: run.capture.text('stderr') };
    return (await this.executions.output(e.executionId)) ?? { stdout: '', stderr: '' };
  }

  /** DELETE: cancels a pending or running execution (its process group is killed); an ended one is returned as is. */
  async cancel(e: Execution): Promise<Execution> {
    if (isTerminal(e.status)) return e;
    const run = this.active.get(e.executionId);
    const outcome: Outcome = { status: 'cancelled', errorCode: EXECUTION_ERRORS.cancelled, errorMessage: 'cancelled by request' };
    if (run === undefined) return this.finishElsewhere(e, outcome);
    this.stopRun(run, outcome);
    return run.finished;
  }

  // --- admission and waiting ---

  /** Commits a wake when the machine sleeps (the reconciler then starts it), under the store's fencing. */
  private async admit(machine: Machine, now: number): Promise<{ machine: Machine; admission: Admission }> {
    const first = decideAdmission(machine);
    if (first !== 'wake') return { machine, admission: first };
    const res = await this.store.mutateMachine(machine.machineId, (cur) => {
      if (cur === undefined || cur.orgId !== machine.orgId) throw machineNotFound();
      const admission = decideAdmission(cur);
      return { patch: admission === 'wake' ? decideAction(cur, 'wake', now).patch : null, result: admission };
    });
    if (res.machine === undefined) throw machineNotFound();
    // A sleep that had not begun yet was called off: the machine still runs.
    const admission = res.machine.phase === 'running' && res.machine.desiredState === 'running' ? 'run' : res.result;
    return { machine: res.machine, admission };
  }

  private watch(machineId: string): MachineWatch {
    let w = this.watches.get(machineId);
    if (w !== undefined) return w;
    const created: MachineWatch = {
      pending: [],
      running: new Set(),
      unsubscribe: () => undefined,
      timer: setInterval(() => {
        if (created.pending.length > 0) void this.check(machineId);
      }, this.opts.recheckMs ?? DEFAULT_RECHECK_MS),
      checking: false,
      checkAgain: false,
    };
    created.timer.unref();
    created.unsubscribe = this.opts.feed.subscribe(machineId, (events) => {
      const last = events[events.length - 1];
      if (last !== undefined && (last.phase === 'destroying' || last.phase === 'destroyed')) {
        for (const run of created.running) {
          this.stopRun(run, { status: 'failed', errorCode: EXECUTION_ERRORS.machineGone, errorMessage: 'the machine was destroyed while the command ran' });
        }
      }
      if (created.pending.length > 0) void this.check(machineId);
    });
    this.watches.set(machineId, created);
    return created;
  }

  private release(machineId: string): void {
    const w = this.watches.get(machineId);
    if (w === undefined || w.pending.length > 0 || w.running.size > 0) return;
    w.unsubscribe();
    clearInterval(w.timer);
    this.watches.delete(machineId);
  }

  /** Re-reads the machine and starts, keeps or ends what waits on it. One check per machine at a time. */
  private async check(machineId: string): Promise<void> {
    const w = this.watches.get(machineId);
    if (w === undefined) return;
    if (w.checking) {
      w.checkAgain = true;
      return;
    }
    w.checking = true;
    try {
      do {
        w.checkAgain = false;
        const m = await this.store.getMachine(machineId);
        const outcome = waitOutcome(m);
        if (outcome === 'run' && m !== undefined) {
          for (const run of w.pending.splice(0)) await this.launch(run, m);
        } else if (outcome === 'wait') {
          const now = this.clock();
          for (const run of w.pending.filter((r) => now >= r.startDeadline)) {
            this.removePending(w, run);
            this.end(run, { status: 'expired', errorCode: EXECUTION_ERRORS.startDeadline, errorMessage: 'the machine did not start in time' });
          }
        } else if (outcome !== 'run') {
          for (const run of w.pending.splice(0)) this.end(run, { status: 'failed', errorCode: outcome.code, errorMessage: outcome.message });
        }
      } while (w.checkAgain);
    } catch (err) {
      this.log.warn({ err, machineId }, 'cannot check a machine for pending executions; will retry');
    } finally {
      w.checking = false;
      this.release(machineId);
    }
  }

  private removePending(w: MachineWatch, run: Run): void {
    const i = w.pending.indexOf(run);
    if (i >= 0) w.pending.splice(i, 1);
  }

  // --- running ---

  private async launch(run: Run, m: Machine): Promise<void> {
    if (run.isEnded) return;
    const w = this.watch(m.machineId);
    w.running.add(run);
    if (!canExec(this.runtime)) {
      this.end(run, { status: 'failed', errorCode: EXECUTION_ERRORS.runtimeUnsupported, errorMessage: `the ${this.runtime.kind} runtime cannot run commands` });
      return;
    }
    try {
      run.handle = await this.runtime.exec(m.machineId, run.request, run.onOutput);
    } catch (err) {
      const reason = err instanceof RuntimeError && err.reason !== undefined ? err.reason : 'ExecFailed';
      this.end(run, { status: 'failed', errorCode: errorCodeOf(reason), errorMessage: err instanceof Error ? err.message : String(err) });
      return;
    }
    const handle = run.handle;
    void handle.done.then((result) => {
      const stop = run.stopReason;
      this.end(run, stop !== null ? { ...stop, exitCode: result.exitCode, signal: result.signal } : outcomeOf(result, run.request.timeoutMs));
    });
    // Stopped while the runtime was starting it: the kill goes to the fresh process group.
    if (run.stopReason !== null) handle.kill();
    else run.started(activityIntervalMs(m.autosleepSeconds));
  }

  /** Stops a run for a reason other than its own exit; the kill's exit then records the reason. */
  private stopRun(run: Run, reason: Outcome): void {
    if (run.isEnded) return;
    run.stopReason ??= reason;
    if (run.handle !== null) {
      run.handle.kill();
      return;
    }
    const w = this.watches.get(run.machineId);
    if (w !== undefined && w.pending.includes(run)) {
      this.removePending(w, run);
      this.end(run, reason);
    }
    // Otherwise it is being launched: launch() kills it as soon as the runtime hands it over.
  }

  private end(run: Run, outcome: Outcome): void {
    const tail = run.finish(outcome).then(async () => {
      this.active.delete(run.executionId);
      const w = this.watches.get(run.machineId);
      w?.running.delete(run);
      this.release(run.machineId);
      // The end of a command is activity too: autosleep counts from here.
      await this.store.touchActivity(run.machineId, this.clock()).catch((err: unknown) => this.log.warn({ err }, 'cannot record execution activity'));
    });
    // stop() waits for these: a query still in flight when the store closes can hang its pool (seen on PostgreSQL).
    this.tails.add(tail);
    void tail.finally(() => this.tails.delete(tail));
  }

  /** Ends an execution no Run of this process holds (left by a dead process, or run by another replica). */
  private async finishElsewhere(e: Execution, outcome: Outcome): Promise<Execution> {
    const now = this.clock();
    const sequence = (await this.executions.lastSequence(e.executionId)) + 1;
    const fields = { exitCode: null, signal: null, errorCode: outcome.errorCode ?? null, errorMessage: outcome.errorMessage ?? null };
    await this.executions.update(
      e.executionId,
      { status: outcome.status, completedAt: now, ...fields },
      { executionId: e.executionId, sequence, type: 'lifecycle', at: now, status: outcome.status, chunk: null, ...fields },
    );
    return { ...e, ...fields, status: outcome.status, completedAt: now };
  }
}

/** A command's own end: exit 0 succeeded; anything else failed, with why. */
export function outcomeOf(result: ExecResult, timeoutMs: number | undefined): Outcome {
  if (result.startError !== undefined) {
    return { status: 'failed', errorCode: result.startError.code, errorMessage: result.startError.message };
  }
  if (result.timedOut) {
    return {
      status: 'failed',
      exitCode: result.exitCode,
      signal: result.signal,
      errorCode: EXECUTION_ERRORS.timeout,
      errorMessage: `killed after its timeout of ${timeoutMs ?? 0} ms`,
    };
  }
  if (result.exitCode === 0) return { status: 'succeeded', exitCode: 0 };
  return { status: 'failed', exitCode: result.exitCode, signal: result.signal };
}
