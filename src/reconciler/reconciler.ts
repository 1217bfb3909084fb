/**
 * The control loop. Level-triggered, after the Kubernetes controller pattern:
 * anything that may matter (a committed change, a sandbox that died, a timer,
 * the periodic resync) only enqueues a machine id; `reconcile(id)` re-reads the
 * machine and takes the one next step that `planStep` derives from it. Each
 * step is idempotent and its commit is fenced on what the step was planned
 * from, so a crash or a concurrent user change at any point yields the same
 * next action on the next pass.
 */
import type { Logger } from 'pino';
import type { BackoffPolicy, RuntimeOp, Step } from '../domain/lifecycle.js';
import { failurePatch, lostPatch, placementPatch, planStep, sizesOf } from '../domain/lifecycle.js';
import { chooseHost } from '../domain/placement.js';
import type { Machine, MachinePatch, Phase } from '../domain/types.js';
import { assertNever } from '../domain/types.js';
import type { ChangeFeed } from '../events/change-feed.js';
import type { Runtime } from '../runtime/runtime.js';
import { RuntimeError } from '../runtime/runtime.js';
import type { MutationResult, Store } from '../store/store.js';
import type { LeaseKeeper } from './leases.js';
import { WorkQueue } from './work-queue.js';

export interface ReconcilerOptions {
  readonly store: Store;
  readonly runtime: Runtime;
  readonly feed: ChangeFeed;
  readonly log: Logger;
  readonly backoff: BackoffPolicy;
  readonly workers: number;
  /** How often every machine that is not settled is looked at again (lost wake-ups, drift). */
  readonly resyncMs: number;
  /** A runtime call that takes longer fails (retryably). */
  readonly runtimeTimeoutMs: number;
  readonly clock?: () => number;
  /** Several replicas on one database: drive only machines whose lease we hold. */
  readonly leases?: LeaseKeeper;
}

/**
 * Phases whose arrival frees capacity someone may be waiting for. (Not
 * placement_pending: every create passes through it, and waking all pending
 * machines on each one is quadratic; a failure on the way there is `failed`.)
 */
const FREES_CAPACITY: ReadonlySet<Phase> = new Set(['sleeping', 'destroyed', 'failed']);

/** How soon waiting machines look for a host again once capacity was freed. */
const PENDING_WAKE_DELAY_MS = 25;
/** Phases of machines that hold no host capacity: their changes cannot make room for anyone. */
const HOLDS_NO_CAPACITY: ReadonlySet<Phase> = new Set(['accepted', 'placement_pending']);
/** A machine that found no host is tried again at least this often even if nothing seemed to change (safety net). */
const UNPLACEABLE_RECHECK_MS = 60_000;

export class Reconciler {
  private readonly opts: ReconcilerOptions;
  private readonly clock: () => number;
  private queue = new WorkQueue();
  /** Machines whose sandbox should be checked against the runtime on their next pass. */
  private readonly toInspect = new Set<string>();
  private workers: Promise<void>[] = [];
  private resyncTimer: NodeJS.Timeout | null = null;
  private unsubscribe: (() => void) | null = null;
  private pendingWake: NodeJS.Timeout | null = null;
  /**
   * Counts changes that may have freed capacity (a placed machine's commit,
   * a different host list). A machine that found no host at one epoch cannot
   * find one until the epoch or its own fit (sizes, host) moves, so passes in
   * between (the resync, a PATCH of its autosleep) skip the placement
   * transaction.
   */
  private capacityEpoch = 0;
  private lastHosts = '';
  private readonly unplaceable = new Map<string, { fit: string; epoch: number; at: number }>();
  /** Per machine, the revision of this reconciler's last commit that its next step was planned from. */
  private readonly continuedFrom = new Map<string, number>();
  /** Machines whose steps run now (`reconcile`), with the revisions of the events that arrived meanwhile. */
  private readonly stepping = new Map<string, number[]>();
  private running = false;
  /** Steps taken, by kind and outcome; read by /metrics. */
  readonly stats = { steps: 0, failures: 0 };

  constructor(opts: ReconcilerOptions) {
    this.opts = opts;
    this.clock = opts.clock ?? Date.now;
    opts.runtime.onSandboxExit((id) => {
      this.toInspect.add(id);
      this.enqueue(id);
    });
  }

  get queueLength(): number {
    return this.queue.length;
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.queue = new WorkQueue();
    const { store, runtime, feed } = this.opts;
    await store.upsertHosts(await runtime.hosts(), this.clock());
    await this.recoverRuntime();

    this.unsubscribe = feed.subscribeAll((events) => {
      let freed = false;
      for (const e of events) {
        // The step after this commit was already planned from it (see `reconcile`).
        if (this.continuedFrom.get(e.machineId) === e.revision) this.continuedFrom.delete(e.machineId);
        else if (this.stepping.has(e.machineId)) this.stepping.get(e.machineId)!.push(e.revision);
        else this.enqueue(e.machineId);
        if (FREES_CAPACITY.has(e.phase)) freed = true;
        if (!HOLDS_NO_CAPACITY.has(e.phase)) this.capacityEpoch++;
      }
      if (freed) this.wakePending();
    });
    this.opts.leases?.start((ids) => ids.forEach((id) => this.enqueue(id)));
    for (let i = 0; i < this.opts.workers; i++) this.workers.push(this.work());
    await this.resync(true);
    // Spread over half the interval: thousands of machines looked at in one burst would stall every stream for it.
    const spreadMs = Math.floor(this.opts.resyncMs / 2);
    this.resyncTimer = setInterval(() => void this.resync(true, spreadMs).catch((err) => this.opts.log.error({ err }, 'resync failed')), this.opts.resyncMs);
    this.resyncTimer.unref();
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.unsubscribe?.();
    if (this.resyncTimer !== null) clearInterval(this.resyncTimer);
    if (this.pendingWake !== null) clearTimeout(this.pendingWake);
    this.pendingWake = null;
    this.queue.shutDown();
    await Promise.all(this.workers);
    this.workers = [];
    await this.opts.leases?.stop();
  }

  enqueue(machineId: string): void {
    if (!this.running) return;
    this.queue.add(machineId);
  }

  /**
   * Looks at every machine that may need work; with `inspect`, checks placed
   * sandboxes against the runtime too. With `spreadMs`, the machines are
   * queued a few at a time over that long (the periodic pass).
   */
  async resync(inspect: boolean, spreadMs = 0): Promise<void> {
    const { store } = this.opts;
    await this.refreshHosts();
    const ids = await store.listActiveMachineIds();
    if (inspect) {
      for (const phase of ['running', 'sleeping'] as const) {
        for (const id of await store.listMachineIdsInPhase(phase)) {
          this.toInspect.add(id);
          ids.push(id);
        }
      }
    }
    if (!this.running) return;
    if (spreadMs > 0) this.queue.addSpread(ids, spreadMs);
    else for (const id of ids) this.enqueue(id);
  }

  private async refreshHosts(): Promise<void> {
    const hosts = await this.opts.runtime.hosts();
    const seen = JSON.stringify(hosts);
    if (seen !== this.lastHosts) this.capacityEpoch++;
    this.lastHosts = seen;
    await this.opts.store.upsertHosts(hosts, this.clock());
  }

  /** After a restart the runtime is told what the store believes it holds. */
  private async recoverRuntime(): Promise<void> {
    const { store, runtime } = this.opts;
    const placed = await store.listPlacedMachines(['running', 'stopping', 'sleeping']);
    const expected = placed.map((m) => ({
      machineId: m.machineId,
      hostId: m.hostId!,
      state: m.phase === 'sleeping' ? ('sleeping' as const) : ('running' as const),
      sizes: m.applied ?? sizesOf(m),
    }));
    await runtime.recover(expected);
  }

  /**
   * Capacity was freed: machines waiting for a host try again, within
   * PENDING_WAKE_DELAY_MS. A burst of sleeps (one per tick under load) lists
   * the waiting machines once, not once per tick.
   */
  private wakePending(): void {
    if (this.pendingWake !== null) return;
    this.pendingWake = setTimeout(() => {
      this.pendingWake = null;
      void this.opts.store
        .listMachineIdsInPhase('placement_pending')
        .then((ids) => ids.forEach((id) => this.enqueue(id)))
        .catch((err: unknown) => this.opts.log.error({ err }, 'listing pending machines failed'));
    }, PENDING_WAKE_DELAY_MS);
  }

  private async work(): Promise<void> {
    for (;;) {
      const id = await this.queue.get();
      if (id === undefined) return;
      try {
        await this.reconcile(id);
      } catch (err) {
        // The store failed (not the runtime: those failures are recorded on the machine). Try again later.
        this.opts.log.warn({ err, machineId: id }, 'reconcile failed; retrying');
        this.queue.addAfter(id, this.opts.backoff.baseMs);
      } finally {
        this.queue.done(id);
      }
    }
  }

  /**
   * The steps for one machine, as long as each commits: the next step is
   * planned from the machine as its predecessor committed it, not read again,
   * and that commit's event does not queue the machine once more
   * (`continuedFrom`). Every step still commits on its own (each phase is
   * its own revision and event), fenced on the machine it was planned from.
   */
  async reconcile(machineId: string): Promise<void> {
    if (!this.running) return;
    let m = await this.opts.store.getMachine(machineId);
    if (m === undefined || !(await this.drives(m))) return this.forget(machineId);
    if (this.toInspect.delete(machineId) && (await this.checkSandbox(m))) return;
    // Events of this machine that arrive while its steps run are held here: the feed may hand over a
    // commit's event before the step that made it has its result.
    const arrived: number[] = [];
    const committed = new Set<number>();
    this.stepping.set(machineId, arrived);
    try {
      while (this.running) {
        const next = await this.step(m);
        if (next === undefined) return;
        committed.add(next.revision);
        if (!arrived.includes(next.revision)) this.continuedFrom.set(machineId, next.revision);
        if (!(await this.drives(next))) return this.forget(machineId);
        m = next;
      }
    } finally {
      this.stepping.delete(machineId);
      // A change by someone else meanwhile: look again.
      if (arrived.some((revision) => !committed.has(revision))) this.enqueue(machineId);
    }
  }

  /** Not when there is nothing left to drive, or another replica drives it (its own feed and timers bring it there). */
  private async drives(m: Machine): Promise<boolean> {
    return m.phase !== 'destroyed' && (this.opts.leases === undefined || (await this.opts.leases.claim(m.machineId)));
  }

  private forget(machineId: string): void {
    this.toInspect.delete(machineId);
    this.unplaceable.delete(machineId);
    this.continuedFrom.delete(machineId);
  }

  /** One step; returns the machine as it committed it, if it did. */
  private async step(m: Machine): Promise<Machine | undefined> {
    const now = this.clock();
    const step = planStep(m, now);
    this.stats.steps++;
    switch (step.kind) {
      case 'idle':
        if (step.recheckAt !== undefined) this.queue.addAfter(m.machineId, step.recheckAt - now, now);
        return undefined;
      case 'transition':
        return this.commitIfUnchanged(m, step.patch);
      case 'place':
        return this.place(m, step.preferredHostId);
      case 'runtime':
        return this.runtimeStep(m, step);
      default:
        return assertNever(step, 'step');
    }
  }

  /** Commits `patch` if the machine is still where the step was planned from; returns it as committed, if it was. */
  private async commitIfUnchanged(planned: Machine, patch: MachinePatch): Promise<Machine | undefined> {
    const result = await this.opts.store.mutateMachine(
      planned.machineId,
      (cur) => ({ patch: cur !== undefined && samePosition(cur, planned) ? patch : null, result: undefined }),
      planned,
    );
    return this.committed(planned, result);
  }

  /**
   * The machine as a step committed it, or undefined. One that moved on
   * since the step was planned is looked at again: recorded activity (an
   * execution, a no-op request) has no event that would bring it back.
   */
  private committed(planned: Machine, { machine, event }: MutationResult<unknown>): Machine | undefined {
    if (event !== null) return machine;
    if (machine !== undefined && !samePosition(machine, planned)) this.enqueue(planned.machineId);
    return undefined;
  }

  /** A machine with storage on a live host may only start there; otherwise any host with room. */
  private async place(planned: Machine, preferredHostId: string | null): Promise<Machine | undefined> {
    const epoch = this.capacityEpoch;
    const now = this.clock();
    const last = this.unplaceable.get(planned.machineId);
    const fit = fitOf(planned, preferredHostId);
    if (last !== undefined && last.fit === fit && last.epoch === epoch && now - last.at < UNPLACEABLE_RECHECK_MS) return undefined;
    // result: whether a placement was tried on the machine as stored and found no room.
    const result = await this.opts.store.mutateMachine(planned.machineId, async (cur, tx) => {
      if (cur === undefined || !samePosition(cur, planned)) return { patch: null, result: false };
      const hosts = await tx.hosts();
      const own = hosts.find((h) => h.hostId === preferredHostId && h.ready);
      const allocated = await tx.allocations(cur);
      const hostId = chooseHost(own !== undefined ? [own] : hosts, allocated, sizesOf(cur), preferredHostId);
      return { patch: placementPatch(cur, hostId, own !== undefined), result: hostId === null };
    }, planned);
    const { machine } = result;
    // Not when the machine moved on before it was tried (e.g. recorded activity): its next pass must try.
    if (result.result && machine !== undefined) this.unplaceable.set(planned.machineId, { fit: fitOf(machine, preferredHostId), epoch, at: now });
    else this.unplaceable.delete(planned.machineId);
    return this.committed(planned, result);
  }

  private async runtimeStep(m: Machine, step: Extract<Step, { kind: 'runtime' }>): Promise<Machine | undefined> {
    const now = this.clock();
    try {
      await this.withTimeout(step.op, this.callRuntime(step.op, m));
    } catch (err) {
      this.stats.failures++;
      const failure =
        err instanceof RuntimeError
          ? { reason: err.reason ?? step.failureReason, message: err.message, retryable: err.retryable }
          : { reason: step.failureReason, message: err instanceof Error ? err.message : String(err), retryable: true };
      this.opts.log.info({ machineId: m.machineId, op: step.op, ...failure }, 'runtime step failed');
      if (failure.reason === 'HostLost') await this.refreshHosts();
      return this.commitIfUnchanged(m, failurePatch(m, failure, this.clock(), this.opts.backoff));
    }
    // `now` (before the call) keeps lastActivityAt from skipping the call's own duration.
    return this.commitIfUnchanged(m, step.success.lastActivityAt !== undefined ? { ...step.success, lastActivityAt: now } : step.success);
  }

  private callRuntime(op: RuntimeOp, m: Machine): Promise<void> {
    const { runtime } = this.opts;
    switch (op) {
      case 'start':
      case 'resize': {
        if (m.hostId === null) throw new RuntimeError('machine has no host', { retryable: true, reason: 'NoHost' });
        const spec = { machineId: m.machineId, hostId: m.hostId, sizes: sizesOf(m) };
        return op === 'start' ? runtime.start(spec) : runtime.resize(spec);
      }
      case 'stop':
        return runtime.stop(m.machineId);
      case 'destroy':
        // Never placed: there is nothing to tear down.
        return m.hostId === null && m.applied === null ? Promise.resolve() : runtime.destroy(m.machineId);
      default:
        return assertNever(op, 'runtime op');
    }
  }

  private withTimeout(op: RuntimeOp, work: Promise<void>): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new RuntimeError(`runtime ${op} timed out after ${this.opts.runtimeTimeoutMs} ms`, { retryable: true, reason: 'RuntimeTimeout' })),
        this.opts.runtimeTimeoutMs,
      );
    });
    return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
  }

  /** Compares a settled machine with its sandbox; records a lost one. Returns whether it committed. */
  private async checkSandbox(m: Machine): Promise<boolean> {
    if ((m.phase !== 'running' && m.phase !== 'sleeping') || m.hostId === null) return false;
    const seen = await this.opts.runtime.inspect(m.machineId, m.hostId);
    if (seen.state === m.phase && !seen.hostGone) return false;
    const message =
      seen.state === 'absent'
        ? `sandbox is gone${seen.hostGone ? ' with its host' : ''}${seen.detail ? `: ${seen.detail}` : ''}`
        : `sandbox is ${seen.state} but the machine is ${m.phase}`;
    if (seen.state !== 'absent' && !seen.hostGone) {
      // Alive but in the other state (e.g. thawed by hand): start/stop again brings it in line.
      const patch: MachinePatch = m.phase === 'running' ? { phase: 'starting', reason: 'SandboxDrift' } : { phase: 'stopping', reason: 'SandboxDrift' };
      await this.commitIfUnchanged(m, patch);
      return true;
    }
    this.opts.log.warn({ machineId: m.machineId, hostId: m.hostId }, message);
    // Placement must not pick a host the runtime just lost.
    if (seen.hostGone) await this.refreshHosts();
    await this.commitIfUnchanged(m, lostPatch(seen.hostGone, message));
    return true;
  }
}

/**
 * What a placement attempt depends on besides the hosts' capacity. Phase and
 * reason are in it so that only a machine already waiting with NoReadyHosts
 * (where another failed attempt would commit nothing) is skipped.
 */
function fitOf(m: Machine, preferredHostId: string | null): string {
  const { vcpu, memoryMib, storageGib } = sizesOf(m);
  return `${m.phase}/${m.reason}/${m.hostId}/${preferredHostId}/${vcpu}/${memoryMib}/${storageGib}`;
}

/** The fields a step is planned from: if they still hold, the step's result applies. */
function samePosition(cur: Machine, planned: Machine): boolean {
  return (
    cur.phase === planned.phase &&
    cur.desiredState === planned.desiredState &&
    cur.hostId === planned.hostId &&
    cur.attempts === planned.attempts &&
    cur.lastActivityAt === planned.lastActivityAt
  );
}
