/**
 * A work queue of machine ids, after client-go's workqueue: adding an id that
 * is already waiting is a no-op (adds coalesce), an id is processed by one
 * worker at a time, and an id added while it is being processed runs once
 * more after `done`.
 */

/**
 * Workers that only read (SQLite reads never leave the microtask queue) could
 * otherwise run through thousands of queued ids without letting I/O in: a
 * resync of 5,000 pending machines held the event loop for about a second.
 */
const YIELD_AFTER_MS = 10;
/** How often a spread-out add hands the queue its next few ids. */
const SPREAD_TICK_MS = 10;

export class WorkQueue {
  private sliceStart = performance.now();
  private queue: string[] = [];
  private head = 0;
  private readonly dirty = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly delayed = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private waiters: ((id: string | undefined) => void)[] = [];
  private shuttingDown = false;
  private spreadTimer: NodeJS.Timeout | null = null;

  get length(): number {
    return this.queue.length - this.head;
  }

  add(id: string): void {
    if (this.shuttingDown || this.dirty.has(id)) return;
    this.dirty.add(id);
    if (this.processing.has(id)) return;
    const waiter = this.waiters.shift();
    if (waiter !== undefined) {
      this.dirty.delete(id);
      this.processing.add(id);
      waiter(id);
      return;
    }
    this.queue.push(id);
  }

  /** Adds `id` after `delayMs`; an earlier pending add wins. */
  addAfter(id: string, delayMs: number, now: number = Date.now()): void {
    if (this.shuttingDown) return;
    if (delayMs <= 0) {
      this.add(id);
      return;
    }
    const at = now + delayMs;
    const existing = this.delayed.get(id);
    if (existing !== undefined) {
      if (existing.at <= at) return;
      clearTimeout(existing.timer);
    }
    const timer = setTimeout(() => {
      this.delayed.delete(id);
      this.add(id);
    }, delayMs);
    timer.unref();
    this.delayed.set(id, { at, timer });
  }

  /**
   * Adds `ids` a few at a time over `overMs` instead of all at once: a
   * periodic resync of thousands of machines then costs a sliver of every
   * tick rather than a burst that delays everything else (stream frames
   * included). A newer spread replaces one still in progress; ids of the old
   * one not yet added are in the new one if they still need work.
   */
  addSpread(ids: readonly string[], overMs: number): void {
    this.stopSpread();
    if (this.shuttingDown || ids.length === 0) return;
    const perTick = Math.ceil(ids.length / Math.max(1, Math.floor(overMs / SPREAD_TICK_MS)));
    let next = 0;
    const addSome = (): void => {
      const end = Math.min(ids.length, next + perTick);
      for (; next < end; next++) this.add(ids[next]!);
      if (next >= ids.length) this.stopSpread();
    };
    addSome();
    if (next < ids.length) {
      this.spreadTimer = setInterval(addSome, SPREAD_TICK_MS);
      this.spreadTimer.unref();
    }
  }

  private stopSpread(): void {
    if (this.spreadTimer !== null) clearInterval(this.spreadTimer);
    this.spreadTimer = null;
  }

  /** The next id to process, or undefined once shut down. Lets I/O run once a time slice is used up. */
  async get(): Promise<string | undefined> {
    if (performance.now() - this.sliceStart > YIELD_AFTER_MS) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      this.sliceStart = performance.now();
    }
    return this.take();
  }

  private take(): Promise<string | undefined> {
    if (this.length > 0) {
      const id = this.queue[this.head++]!;
      if (this.head > 1024 && this.head * 2 > this.queue.length) {
        this.queue = this.queue.slice(this.head);
        this.head = 0;
      }
      this.dirty.delete(id);
      this.processing.add(id);
      return Promise.resolve(id);
    }
    if (this.shuttingDown) return Promise.resolve(undefined);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  done(id: string): void {
    this.processing.delete(id);
    if (this.dirty.has(id)) {
      this.dirty.delete(id);
      this.add(id);
    }
  }

  shutDown(): void {
    this.shuttingDown = true;
    this.stopSpread();
    for (const { timer } of this.delayed.values()) clearTimeout(timer);
    this.delayed.clear();
    for (const w of this.waiters) w(undefined);
    this.waiters = [];
  }
}
