/**
 * Idempotency-key queries (see api/idempotency.ts for the semantics): a key
 * is claimed in flight, completed with the response to replay, or released
 * when the response is not one to keep. A claim whose process died is taken
 * over once its lease has passed, fenced on that lease in SQL.
 */
import type { Kysely } from 'kysely';
import type { SqlRunner } from './hot-sql.js';
import { SQL } from './hot-sql.js';
import type { Database, IdempotencyKeysTable } from './schema.js';
import type { IdempotencyClaim, StoredResponse } from './store.js';

type Db = Kysely<Database>;

/**
 * Where a store keeps its idempotency claims. `complete` and `release` write
 * through the caller's runner (inside a change's transaction, or on their
 * own); `done` follows the COMMIT that completed or released the key.
 */
export interface Claims {
  claim(orgId: string, key: string, requestHash: string, now: number, leaseMs: number): Promise<IdempotencyClaim>;
  complete(sql: SqlRunner, orgId: string, key: string, response: StoredResponse): Promise<void>;
  release(sql: SqlRunner, orgId: string, key: string): Promise<void>;
  done(orgId: string, key: string): void;
}

/**
 * What a stored key means to a request with `requestHash`: the response to
 * replay, a mismatch, a claim still running; null when its claim's lease has
 * passed (its process died mid-request) and the key may be taken over.
 */
function claimOfRow(row: IdempotencyKeysTable, requestHash: string, now: number): IdempotencyClaim | null {
  if (row.request_hash !== requestHash) return { kind: 'mismatch', storedHash: row.request_hash };
  if (row.state === 'done' && row.status_code !== null && row.body !== null) {
    return {
      kind: 'replay',
      response: { statusCode: row.status_code, headers: JSON.parse(row.headers ?? '{}') as Record<string, string>, body: row.body },
    };
  }
  return row.locked_until > now ? { kind: 'in_flight' } : null;
}

/**
 * PostgreSQL: a claim is a row (`in_flight`, with a lease), shared by the
 * replicas. Hand-written SQL (hot-sql.ts): it is on the request path of every
 * mutation that carries a key.
 */
export class SharedClaims implements Claims {
  constructor(private readonly reads: SqlRunner) {}

  async claim(orgId: string, key: string, requestHash: string, now: number, leaseMs: number): Promise<IdempotencyClaim> {
    const sql = this.reads;
    if ((await sql.run(SQL.claimKey, [orgId, key, requestHash, now, now + leaseMs])) > 0) return { kind: 'claimed' };
    const [row] = await sql.rows<IdempotencyKeysTable>(SQL.selectKey, [orgId, key]);
    if (row === undefined) return this.claim(orgId, key, requestHash, now, leaseMs);
    const stored = claimOfRow(row, requestHash, now);
    if (stored !== null) return stored;
    // The first attempt's process died mid-request: take the key over, fenced on its lease.
    const taken = await sql.run(SQL.takeOverKey, [now + leaseMs, orgId, key, row.locked_until]);
    return taken > 0 ? { kind: 'claimed' } : { kind: 'in_flight' };
  }

  async complete(sql: SqlRunner, orgId: string, key: string, response: StoredResponse): Promise<void> {
    await sql.run(SQL.completeKey, [response.statusCode, JSON.stringify(response.headers), response.body, orgId, key]);
  }

  async release(sql: SqlRunner, orgId: string, key: string): Promise<void> {
    await sql.run(SQL.releaseKey, [orgId, key]);
  }

  done(): void {
    // The row is the claim: nothing is held here.
  }
}

/**
 * SQLite: the one process that writes the database holds its in-flight
 * claims in memory, and takes them synchronously: two requests with one key
 * cannot both find it free. A claim costs a read and no transaction, and a
 * key one row, written with the change it guards (or alone, for a refusal),
 * instead of a row written twice in transactions of their own. A claim dies
 * with its process, the only one that could have finished it. A row left in
 * flight by an older version is honoured until its lease ends.
 */
export class LocalClaims implements Claims {
  private readonly inFlight = new Map<string, { hash: string; createdAt: number; lockedUntil: number; heldRow: boolean }>();
  private claimsSinceSweep = 0;

  /** `read`: the key's row as committed, synchronously, so that no other claim runs between the read and the claim. */
  constructor(private readonly read: (orgId: string, key: string) => IdempotencyKeysTable | undefined) {}

  /** Async only for the interface: it awaits nothing, so the read and the claim happen in one step. */
  async claim(orgId: string, key: string, requestHash: string, now: number, leaseMs: number): Promise<IdempotencyClaim> {
    const id = claimId(orgId, key);
    const held = this.inFlight.get(id);
    if (held !== undefined && held.lockedUntil > now) return held.hash === requestHash ? { kind: 'in_flight' } : { kind: 'mismatch', storedHash: held.hash };
    const row = this.read(orgId, key);
    const stored = row === undefined ? null : claimOfRow(row, requestHash, now);
    if (stored !== null) return stored;
    this.sweep(now);
    this.inFlight.set(id, { hash: requestHash, createdAt: now, lockedUntil: now + leaseMs, heldRow: row !== undefined });
    return { kind: 'claimed' };
  }

  /** Records the key's row with its response. */
  async complete(sql: SqlRunner, orgId: string, key: string, response: StoredResponse): Promise<void> {
    const held = this.inFlight.get(claimId(orgId, key));
    if (held === undefined) return;
    const { statusCode, headers, body } = response;
    await sql.run(SQL.upsertDoneKey, [orgId, key, held.hash, statusCode, JSON.stringify(headers), body, held.createdAt, held.createdAt]);
  }

  /** Only a row taken over from an older version has anything to delete. */
  async release(sql: SqlRunner, orgId: string, key: string): Promise<void> {
    if (this.inFlight.get(claimId(orgId, key))?.heldRow === true) await sql.run(SQL.releaseKey, [orgId, key]);
  }

  done(orgId: string, key: string): void {
    this.inFlight.delete(claimId(orgId, key));
  }

  /** Now and then, claims whose request never finished (nor failed) are dropped once their lease is over. */
  private sweep(now: number): void {
    if (++this.claimsSinceSweep < SWEEP_EVERY) return;
    this.claimsSinceSweep = 0;
    for (const [id, held] of this.inFlight) if (held.lockedUntil <= now) this.inFlight.delete(id);
  }
}

const SWEEP_EVERY = 10_000;

function claimId(orgId: string, key: string): string {
  return `${orgId}\n${key}`;
}

export async function purgeIdempotencyKeys(db: Db, createdBefore: number): Promise<number> {
  const res = await db.deleteFrom('idempotency_keys').where('created_at', '<', createdBefore).executeTakeFirst();
  return Number(res.numDeletedRows);
}
