/**
 * Machine leases for several replicas on one PostgreSQL: exactly one replica
 * drives a machine at a time. A lease is taken with a fenced UPDATE (free,
 * expired or already ours), renewed in bulk, and released on shutdown; when a
 * replica dies its leases expire and the sweep hands the machines to another.
 */
import type { Logger } from 'pino';
import type { Store } from '../store/store.js';

export interface LeaseOptions {
  readonly store: Store;
  readonly owner: string;
  readonly ttlMs: number;
  readonly log: Logger;
  readonly clock?: () => number;
}

export class LeaseKeeper {
  private readonly held = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;
  private readonly clock: () => number;

  constructor(private readonly opts: LeaseOptions) {
    this.clock = opts.clock ?? Date.now;
  }

  get owner(): string {
    return this.opts.owner;
  }

  /** Whether this replica drives the machine now (claiming it when free). */
  async claim(machineId: string): Promise<boolean> {
    const now = this.clock();
    const until = this.held.get(machineId);
    // A lease with more than half its time left needs no round trip.
    if (until !== undefined && until - now > this.opts.ttlMs / 2) return true;
    const ok = await this.opts.store.claimMachine(machineId, this.opts.owner, now, this.opts.ttlMs);
    if (ok) this.held.set(machineId, now + this.opts.ttlMs);
    else this.held.delete(machineId);
    return ok;
  }

  /** Renews what we hold and offers machines nobody drives to `takeOver`, every third of the TTL. */
  start(takeOver: (machineIds: string[]) => void): void {
    const tick = async () => {
      const { store, owner, ttlMs } = this.opts;
      const now = this.clock();
      const renewed = await store.renewLeases(owner, now, ttlMs);
      this.held.clear();
      for (const id of renewed) this.held.set(id, now + ttlMs);
      const orphans = await store.listClaimable(owner, now);
      if (orphans.length > 0) takeOver(orphans);
    };
    this.timer = setInterval(() => void tick().catch((err: unknown) => this.opts.log.warn({ err }, 'lease renewal failed')), Math.max(50, Math.floor(this.opts.ttlMs / 3)));
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.held.clear();
    // Handing over at once beats waiting for expiry.
    await this.opts.store.releaseLeases(this.opts.owner);
  }
}
