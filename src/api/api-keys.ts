/**
 * API keys: `hk_` + 32 random bytes (base64url). Only a SHA-256 hash is
 * stored; the key is shown once, at creation.
 */
import { createHash, randomBytes } from 'node:crypto';
import { uuidv7 } from '../domain/ids.js';
import type { ApiKeyRecord, Store } from '../store/store.js';

export const KEY_PREFIX = 'hk_';

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

export interface CreatedKey {
  readonly key: string;
  readonly record: ApiKeyRecord;
}

export async function createApiKey(
  store: Store,
  opts: { orgId: string; scope: 'admin' | 'user'; name?: string; now?: number },
): Promise<CreatedKey> {
  const now = opts.now ?? Date.now();
  const key = KEY_PREFIX + randomBytes(32).toString('base64url');
  const record: ApiKeyRecord = {
    keyId: `key_${uuidv7(now).replace(/-/g, '')}`,
    orgId: opts.orgId,
    prefix: key.slice(0, 10),
    scope: opts.scope,
    name: opts.name ?? '',
    createdAt: now,
    revokedAt: null,
  };
  await store.ensureOrg(opts.orgId, opts.orgId, now);
  await store.insertApiKey({ ...record, keyHash: hashApiKey(key) });
  return { key, record };
}
