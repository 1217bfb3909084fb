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

/** On the request path of every mutation that carries a key: hand-written SQL (hot-sql.ts), run by the store. */
export async function claimIdempotencyKey(sql: SqlRunner, orgId: string, key: string, requestHash: string, now: number, leaseMs: number): Promise<IdempotencyClaim> {
  if ((await sql.run(SQL.claimKey, [orgId, key, requestHash, now, now + leaseMs])) > 0) return { kind: 'claimed' };
  const [row] = await sql.rows<IdempotencyKeysTable>(SQL.selectKey, [orgId, key]);
  if (row === undefined) return claimIdempotencyKey(sql, orgId, key, requestHash, now, leaseMs);
  if (row.request_hash !== requestHash) return { kind: 'mismatch', storedHash: row.request_hash };
  if (row.state === 'done' && row.status_code !== null && row.body !== null) {
    return {
      kind: 'replay',
      response: { statusCode: row.status_code, headers: JSON.parse(row.headers ?? '{}') as Record<string, string>, body: row.body },
    };
  }
  if (row.locked_until > now) return { kind: 'in_flight' };
  // The first attempt's process died mid-request: take the key over, fenced on its lease.
  const taken = await sql.run(SQL.takeOverKey, [now + leaseMs, orgId, key, row.locked_until]);
  return taken > 0 ? { kind: 'claimed' } : { kind: 'in_flight' };
}

export async function completeIdempotencyKey(sql: SqlRunner, orgId: string, key: string, response: StoredResponse): Promise<void> {
  await sql.run(SQL.completeKey, [response.statusCode, JSON.stringify(response.headers), response.body, orgId, key]);
}

export async function releaseIdempotencyKey(sql: SqlRunner, orgId: string, key: string): Promise<void> {
  await sql.run(SQL.releaseKey, [orgId, key]);
}

export async function purgeIdempotencyKeys(db: Db, createdBefore: number): Promise<number> {
  const res = await db.deleteFrom('idempotency_keys').where('created_at', '<', createdBefore).executeTakeFirst();
  return Number(res.numDeletedRows);
}
