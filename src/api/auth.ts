/**
 * Authentication and tenancy for /v1: a key from `Authorization: Bearer` or
 * `x-api-key`, an optional `X-Dedalus-Org-Id` that must be the key's org.
 * Key lookups are cached briefly so that a hot path costs no query; a revoked
 * key stops working within the cache period.
 */
import type { FastifyRequest } from 'fastify';
import { ApiError } from '../domain/errors.js';
import type { ApiKeyRecord, Store } from '../store/store.js';
import { hashApiKey } from './api-keys.js';

export interface AuthContext {
  readonly orgId: string;
  readonly keyId: string;
  readonly scope: 'admin' | 'user';
}

declare module 'fastify' {
  interface FastifyRequest {
    auth: AuthContext | null;
  }
}

const CACHE_LIMIT = 10_000;

export class Authenticator {
  private readonly cache = new Map<string, { record: ApiKeyRecord | undefined; until: number }>();

  constructor(
    private readonly store: Store,
    private readonly cacheMs: number,
    private readonly clock: () => number = Date.now,
  ) {}

  /** The caller's identity, or ApiError (401/403). */
  async authenticate(headers: FastifyRequest['headers']): Promise<AuthContext> {
    const bearer = bearerToken(headers.authorization);
    const apiKey = single(headers['x-api-key']);
    if (bearer !== undefined && apiKey !== undefined && bearer !== apiKey) {
      throw new ApiError('AUTH_INVALID', 'Authorization and x-api-key carry different keys');
    }
    const key = bearer ?? apiKey;
    if (key === undefined || key === '') throw new ApiError('AUTH_REQUIRED', 'an API key is required');
    const record = await this.lookup(key);
    if (record === undefined || record.revokedAt !== null) throw new ApiError('AUTH_INVALID', 'invalid API key');
    const org = single(headers['x-dedalus-org-id']);
    if (org !== undefined && org.toLowerCase() !== record.orgId.toLowerCase()) {
      throw new ApiError('AUTH_ORG_MISMATCH', 'org scope does not match API key ownership');
    }
    return { orgId: record.orgId, keyId: record.keyId, scope: record.scope };
  }

  private async lookup(key: string): Promise<ApiKeyRecord | undefined> {
    const hash = hashApiKey(key);
    const now = this.clock();
    const hit = this.cache.get(hash);
    if (hit !== undefined && hit.until > now) return hit.record;
    const record = await this.store.findApiKeyByHash(hash);
    if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
    this.cache.set(hash, { record, until: now + this.cacheMs });
    return record;
  }
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function bearerToken(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const m = /^Bearer\s+(.+)$/i.exec(header.trim());
  return m?.[1]?.trim();
}

/** The caller's auth context; routes under /v1 always have one. */
export function authOf(request: FastifyRequest): AuthContext {
  if (request.auth === null) throw new ApiError('AUTH_REQUIRED', 'an API key is required');
  return request.auth;
}

export function requireAdmin(request: FastifyRequest): void {
  if (authOf(request).scope !== 'admin') throw new ApiError('AUTH_SCOPE_FORBIDDEN', 'an admin-scoped API key is required');
}
