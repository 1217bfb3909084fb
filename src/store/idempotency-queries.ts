/**
 * Idempotency-key queries (see api/idempotency.ts for the semantics): a key
 * is claimed in flight, completed with the response to replay, or released
 * when the response is not one to keep. A claim whose process died is taken
 * over once its lease has passed, fenced on that lease in SQL.
 */
import type { Kysely } from 'kysely';
import type { Database } from './schema.js';
import type { IdempotencyClaim, StoredResponse } from './store.js';

type Db = Kysely<Database>;


export async function claimIdempotencyKey(db: Db, orgId: string, key: string, requestHash: string, now: number, leaseMs: number): Promise<IdempotencyClaim> {
  const inserted = await db
    .insertInto('idempotency_keys')
    .values({
      org_id: orgId,
      idem_key: key,
      request_hash: requestHash,
      state: 'in_flight',
      status_code: null,
      headers: null,
      body: null,
      created_at: now,
      locked_until: now + leaseMs,
    })
    .onConflict((oc) => oc.columns(['org_id', 'idem_key']).doNothing())
    .executeTakeFirst();
  if (Number(inserted.numInsertedOrUpdatedRows ?? 0n) > 0) return { kind: 'claimed' };

  const row = await db
    .selectFrom('idempotency_keys')
    .selectAll()
    .where('org_id', '=', orgId)
    .where('idem_key', '=', key)
    .executeTakeFirst();
  if (row === undefined) return claimIdempotencyKey(db, orgId, key, requestHash, now, leaseMs);
  if (row.request_hash !== requestHash) return { kind: 'mismatch', storedHash: row.request_hash };
  if (row.state === 'done' && row.status_code !== null && row.body !== null) {
    return {
      kind: 'replay',
      response: { statusCode: row.status_code, headers: JSON.parse(row.headers ?? '{}') as Record<string, string>, body: row.body },
    };
  }
  if (row.locked_until > now) return { kind: 'in_flight' };
  // The first attempt's process died mid-request: take the key over, fenced on its lease.
  const taken = await db
    .updateTable('idempotency_keys')
    .set({ locked_until: now + leaseMs })
    .where('org_id', '=', orgId)
    .where('idem_key', '=', key)
    .where('state', '=', 'in_flight')
    .where('locked_until', '=', row.locked_until)
    .executeTakeFirst();
  return Number(taken.numUpdatedRows) > 0 ? { kind: 'claimed' } : { kind: 'in_flight' };
}

export async function completeIdempotencyKey(db: Db, orgId: string, key: string, response: StoredResponse): Promise<void> {
  await db
    .updateTable('idempotency_keys')
    .set({ state: 'done', status_code: response.statusCode, headers: JSON.stringify(response.headers), body: response.body })
    .where('org_id', '=', orgId)
    .where('idem_key', '=', key)
    .execute();
}

export async function releaseIdempotencyKey(db: Db, orgId: string, key: string): Promise<void> {
  await db
    .deleteFrom('idempotency_keys')
    .where('org_id', '=', orgId)
    .where('idem_key', '=', key)
    .where('state', '=', 'in_flight')
    .execute();
}

export async function purgeIdempotencyKeys(db: Db, createdBefore: number): Promise<number> {
  const res = await db.deleteFrom('idempotency_keys').where('created_at', '<', createdBefore).executeTakeFirst();
  return Number(res.numDeletedRows);
}
