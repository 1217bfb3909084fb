/** Organisation and API-key queries (keys are stored hashed; see api/api-keys.ts). */
import type { Kysely } from 'kysely';
import type { Database } from './schema.js';
import type { ApiKeyRecord } from './store.js';

type Db = Kysely<Database>;

export async function ensureOrg(db: Db, orgId: string, name: string, now: number): Promise<void> {
  await db
    .insertInto('orgs')
    .values({ org_id: orgId, name, created_at: now })
    .onConflict((oc) => oc.column('org_id').doNothing())
    .execute();
}

export async function insertApiKey(db: Db, rec: ApiKeyRecord & { keyHash: string }): Promise<void> {
  await db
    .insertInto('api_keys')
    .values({
      key_id: rec.keyId,
      org_id: rec.orgId,
      key_hash: rec.keyHash,
      prefix: rec.prefix,
      scope: rec.scope,
      name: rec.name,
      created_at: rec.createdAt,
      revoked_at: rec.revokedAt,
    })
    .execute();
}

export async function findApiKeyByHash(db: Db, keyHash: string): Promise<ApiKeyRecord | undefined> {
  const row = await db.selectFrom('api_keys').selectAll().where('key_hash', '=', keyHash).executeTakeFirst();
  return row === undefined ? undefined : keyRecord(row);
}

export async function listApiKeys(db: Db, orgId?: string): Promise<ApiKeyRecord[]> {
  let q = db.selectFrom('api_keys').selectAll().orderBy('created_at').orderBy('key_id');
  if (orgId !== undefined) q = q.where('org_id', '=', orgId);
  return (await q.execute()).map(keyRecord);
}

export async function revokeApiKey(db: Db, keyId: string, now: number): Promise<boolean> {
  const res = await db
    .updateTable('api_keys')
    .set({ revoked_at: now })
    .where('key_id', '=', keyId)
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
  return Number(res.numUpdatedRows) > 0;
}

export async function countApiKeys(db: Db, ): Promise<number> {
  const row = await db.selectFrom('api_keys').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
  return Number(row.n);
}

function keyRecord(row: {
  key_id: string;
  org_id: string;
  prefix: string;
  scope: 'admin' | 'user';
  name: string;
  created_at: number;
  revoked_at: number | null;
}): ApiKeyRecord {
  return {
    keyId: row.key_id,
    orgId: row.org_id,
    prefix: row.prefix,
    scope: row.scope,
    name: row.name,
    createdAt: Number(row.created_at),
    revokedAt: row.revoked_at === null ? null : Number(row.revoked_at),
  };
}
