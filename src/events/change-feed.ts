/**
 * The change feed: every committed change, once, in revision order, fanned
 * out to subscribers of a machine and to whole-feed subscribers (the
 * reconciler).
 *
 * Sources: this process's commits arrive through `offer` (fast path, no
 * read); commits of other processes (PostgreSQL replicas) and anything
 * missed are read from the event log by `catchUp`. Revisions are gap-free in
 * commit order (see store/sql-store.ts), so the feed only ever delivers
 * revision N after N-1; an event that arrives early waits for the gap to fill
 * from the log.
 */
import type { Store, StoredEvent } from '../store/store.js';
import { statusFrame } from './frames.js';

export interface FeedEvent extends StoredEvent {
  /** The `status` SSE frame for this event, built once. */
  readonly frame: Buffer;
}

export type FeedListener = (events: readonly FeedEvent[]) => void;

export interface ChangeFeedOptions {
  /** Events read per query while catching up. */
  readonly batchSize?: number;
  /** How long an early event waits for its gap to fill from local commits before the log is read. */
  readonly gapWaitMs?: number;
  /** Called when reading the log fails, and when it works again. */
  readonly onHealth?: (healthy: boolean, error?: unknown) => void;
}

const DEFAULT_BATCH = 1000;
const DEFAULT_GAP_WAIT_MS = 20;
const RETRY_MS = 250;
const MAX_RETRY_MS = 5000;

export class ChangeFeed {
  private readonly store: Pick<Store, 'readEvents' | 'headRevision' | 'onCommit' | 'remoteCommits'>;
  private readonly batchSize: number;
  private readonly gapWaitMs: number;
  private readonly healthListeners: ((healthy: boolean, error?: unknown) => void)[] = [];

  /** Highest revision accepted (queued for dispatch). */
  private accepted = 0;
  /** Highest revision every subscriber has been handed. */
  private dispatched = 0;
  private readonly early = new Map<number, StoredEvent>();
  private queue: FeedEvent[] = [];
  private dispatchScheduled = false;
  private readonly byMachine = new Map<string, Set<FeedListener>>();
  private readonly everything = new Set<FeedListener>();

  private catchUpRunning = false;
  private catchUpAgain = false;
  private gapTimer: NodeJS.Timeout | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private failures = 0;
  private healthy = true;
  private stopped = false;
  private unlisten: (() => Promise<void>) | null = null;

  constructor(store: Pick<Store, 'readEvents' | 'headRevision' | 'onCommit' | 'remoteCommits'>, opts: ChangeFeedOptions = {}) {
    this.store = store;
    this.batchSize = opts.batchSize ?? DEFAULT_BATCH;
    this.gapWaitMs = opts.gapWaitMs ?? DEFAULT_GAP_WAIT_MS;
    if (opts.onHealth !== undefined) this.healthListeners.push(opts.onHealth);
  }

  /** Called when reading the log starts failing (store lost) and when it works again. */
  onHealthChange(listener: (healthy: boolean, error?: unknown) => void): void {
    this.healthListeners.push(listener);
  }

  /** Starts at the log's head: subscribers see changes committed from now on. */
  async start(): Promise<void> {
    const head = await this.store.headRevision();
    this.accepted = head;
    this.dispatched = head;
    this.store.onCommit((events) => this.offer(events));
    const remote = this.store.remoteCommits;
    if (remote !== undefined) {
      this.unlisten = await remote.listen(
        (revision) => {
          if (revision > this.accepted) this.requestCatchUp();
        },
        // (Re)subscribed: notifications sent while we were away are lost; the log has them.
        () => this.requestCatchUp(),
      );
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.gapTimer !== null) clearTimeout(this.gapTimer);
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    await this.unlisten?.();
  }

  /** Revision up to which every subscriber has been handed every change. */
  get dispatchedRevision(): number {
    return this.dispatched;
  }

  get isHealthy(): boolean {
    return this.healthy;
  }

  subscribe(machineId: string, listener: FeedListener): () => void {
    let set = this.byMachine.get(machineId);
    if (set === undefined) {
      set = new Set();
      this.byMachine.set(machineId, set);
    }
    set.add(listener);
    return () => {
      const s = this.byMachine.get(machineId);
      if (s === undefined) return;
      s.delete(listener);
      if (s.size === 0) this.byMachine.delete(machineId);
    };
  }

  subscribeAll(listener: FeedListener): () => void {
    this.everything.add(listener);
    return () => this.everything.delete(listener);
  }

  /** Local commits, in any order. */
  offer(events: readonly StoredEvent[]): void {
    for (const e of events) {
      if (e.revision > this.accepted) this.early.set(e.revision, e);
    }
    this.drainEarly();
    if (this.early.size > 0) this.armGapTimer();
  }

  /** Reads the log from the last accepted revision (other replicas' commits, a filled gap). */
  requestCatchUp(): void {
    if (this.stopped) return;
    if (this.catchUpRunning) {
      this.catchUpAgain = true;
      return;
    }
    this.catchUpRunning = true;
    void this.runCatchUp();
  }

  private async runCatchUp(): Promise<void> {
    try {
      do {
        this.catchUpAgain = false;
        for (;;) {
          const batch = await this.store.readEvents(this.accepted, this.batchSize);
          for (const e of batch) if (e.revision > this.accepted) this.accept(e);
          if (batch.length < this.batchSize) break;
        }
        this.drainEarly();
      } while (this.catchUpAgain && !this.stopped);
      this.setHealthy(true);
    } catch (err) {
      this.failures++;
      this.setHealthy(false, err);
      const delay = Math.min(MAX_RETRY_MS, RETRY_MS * 2 ** Math.min(this.failures, 5));
      if (!this.stopped) this.retryTimer = setTimeout(() => this.requestCatchUp(), delay);
    } finally {
      this.catchUpRunning = false;
    }
    if (this.early.size > 0) this.armGapTimer();
  }

  private setHealthy(healthy: boolean, error?: unknown): void {
    if (healthy) this.failures = 0;
    if (healthy === this.healthy) return;
    this.healthy = healthy;
    for (const listener of this.healthListeners) listener(healthy, error);
  }

  private drainEarly(): void {
    // Runs on every reported commit; almost always nothing is early.
    if (this.early.size === 0) return;
    for (const rev of [...this.early.keys()]) if (rev <= this.accepted) this.early.delete(rev);
    for (let next = this.early.get(this.accepted + 1); next !== undefined; next = this.early.get(this.accepted + 1)) {
      this.early.delete(next.revision);
      this.accept(next);
    }
  }

  private armGapTimer(): void {
    if (this.gapTimer !== null || this.stopped) return;
    this.gapTimer = setTimeout(() => {
      this.gapTimer = null;
      if (this.early.size > 0) this.requestCatchUp();
    }, this.gapWaitMs);
  }

  private accept(e: StoredEvent): void {
    this.accepted = e.revision;
    this.queue.push({ ...e, frame: statusFrame(e.revision, e.body) });
    if (!this.dispatchScheduled) {
      this.dispatchScheduled = true;
      // Once the caller is done (a group commit hands over all its events at once), before any
      // further I/O: a frame waiting for the next loop iteration waits for every request that arrived.
      queueMicrotask(() => this.dispatch());
    }
  }

  private dispatch(): void {
    this.dispatchScheduled = false;
    const batch = this.queue;
    this.queue = [];
    if (batch.length === 0) return;
    for (const listener of this.everything) listener(batch);
    if (this.byMachine.size > 0) {
      const perMachine = new Map<string, FeedEvent[]>();
      for (const e of batch) {
        if (!this.byMachine.has(e.machineId)) continue;
        const list = perMachine.get(e.machineId);
        if (list === undefined) perMachine.set(e.machineId, [e]);
        else list.push(e);
      }
      for (const [machineId, events] of perMachine) {
        const listeners = this.byMachine.get(machineId);
        if (listeners === undefined) continue;
        for (const listener of listeners) listener(events);
      }
    }
    this.dispatched = batch[batch.length - 1]!.revision;
  }
}
