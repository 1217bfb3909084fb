/**
 * All open status streams of this process: one timer sends bookmarks to the
 * idle ones (instead of a timer per watcher), and shutdown or a lost store
 * ends them all with an error frame.
 */
import type { ErrorEnvelope } from '../../domain/errors.js';
import type { StatusWatcher, WatcherEnd } from './status-watcher.js';

export interface WatcherStats {
  opened: number;
  ended: Record<WatcherEnd, number>;
}

export class WatcherRegistry {
  private readonly watchers = new Set<StatusWatcher>();
  private timer: NodeJS.Timeout | null = null;
  readonly stats: WatcherStats = { opened: 0, ended: { converged: 0, slow: 0, closed: 0, error: 0, gone: 0 } };

  constructor(
    private readonly bookmarkIntervalMs: number,
    /** The revision up to which every live watcher has been handed every change. */
    private readonly completeRevision: () => number,
  ) {}

  get size(): number {
    return this.watchers.size;
  }

  /** Per-watcher interval with ±10% jitter, so idle streams do not all wake together. */
  jitteredInterval(): number {
    return Math.round(this.bookmarkIntervalMs * (0.9 + Math.random() * 0.2));
  }

  add(w: StatusWatcher): void {
    this.watchers.add(w);
    this.stats.opened++;
    if (this.timer === null) {
      // Frequent small sweeps rather than one a second: a sweep writes every bookmark that is due, and
      // thousands of them in one go hold up the frames of real changes committed meanwhile.
      const tick = Math.max(5, Math.min(50, Math.floor(this.bookmarkIntervalMs / 4)));
      this.timer = setInterval(() => this.sweep(), tick);
      this.timer.unref();
    }
  }

  readonly remove = (w: StatusWatcher, why: WatcherEnd): void => {
    if (this.watchers.delete(w)) this.stats.ended[why]++;
  };

  private sweep(): void {
    const now = Date.now();
    const revision = this.completeRevision();
    for (const w of this.watchers) {
      if (now - w.lastWriteAt >= w.bookmarkIntervalMs) w.bookmark(revision, now);
    }
  }

  failAll(envelope: ErrorEnvelope): void {
    for (const w of [...this.watchers]) w.fail(envelope);
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }
}
