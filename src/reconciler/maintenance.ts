/**
 * Housekeeping on a timer: purge destroyed machines after the retention
 * period, compact the event log, forget old idempotency keys.
 */
import type { Logger } from 'pino';
import type { CompactionPolicy, Store } from '../store/store.js';

export interface MaintenanceOptions {
  readonly store: Store;
  readonly log: Logger;
  readonly intervalMs: number;
  readonly destroyedRetentionMs: number;
  readonly idempotencyRetentionMs: number;
  readonly compaction: CompactionPolicy;
  readonly clock?: () => number;
}

export class Maintenance {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;

  constructor(private readonly opts: MaintenanceOptions) {}

  start(): void {
    this.timer = setInterval(() => void this.runOnce(), this.opts.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    await this.running;
  }

  /** One pass; passes never overlap. */
  runOnce(): Promise<void> {
    this.running ??= this.pass().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async pass(): Promise<void> {
    const { store, log } = this.opts;
    const now = (this.opts.clock ?? Date.now)();
    try {
      const purged = await store.purgeDestroyed(now - this.opts.destroyedRetentionMs);
      const compacted = await store.compactEvents(this.opts.compaction, now);
      const keys = await store.purgeIdempotencyKeys(now - this.opts.idempotencyRetentionMs);
      if (purged + compacted + keys > 0) log.debug({ purged, compacted, keys }, 'maintenance');
    } catch (err) {
      log.warn({ err }, 'maintenance pass failed');
    }
  }
}
