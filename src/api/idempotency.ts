/**
 * Idempotency-Key on POST, PATCH and DELETE, scoped by (org, key), kept 24 h.
 * The same request (method, path, canonical body) replays the stored response;
 * another request with the key gets IDEMPOTENCY_KEY_REUSED; a repeat while the
 * first is still running gets 429 with retry_after_ms 250. Responses a blind
 * retry could change (408, 409 REVISION_MISMATCH, 429, 5xx) are not kept.
 * A response to a change is recorded in the change's own transaction (the
 * routes pass `keptResponse` to the store); a refusal, after it is sent.
 */
import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ApiError } from '../domain/errors.js';
import type { KeptResponse, Store } from '../store/store.js';
import { authOf } from './auth.js';

const IN_FLIGHT_RETRY_MS = 250;
const MAX_KEY_LENGTH = 255;
/** Response headers replayed with the body. */
const KEPT_HEADERS = ['content-type', 'etag', 'x-should-retry', 'retry-after-ms'];

declare module 'fastify' {
  interface FastifyRequest {
    idempotencyKey: string | null;
  }
  interface FastifyContextConfig {
    idempotent?: boolean;
  }
}

/** JSON with object keys sorted, so `{"a":1,"b":2}` and `{"b":2,"a":1}` are the same request. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.keys(value as object)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`);
    return `{${entries.join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

export function requestHash(method: string, path: string, body: unknown): string {
  return createHash('sha256').update(`${method} ${path}\n${body === undefined ? '' : canonicalJson(body)}`).digest('hex');
}

/**
 * For a request holding its Idempotency-Key claim: its response, to be
 * recorded in the transaction of the change it makes (see KeptResponse).
 * Once that change has committed, `keptWithChange` tells the hook that
 * there is nothing left to record.
 */
export function keptResponse(request: FastifyRequest, respond: KeptResponse['respond']): KeptResponse | undefined {
  const key = request.idempotencyKey;
  return key === null ? undefined : { orgId: authOf(request).orgId, key, respond };
}

export function keptWithChange(request: FastifyRequest): void {
  request.idempotencyKey = null;
}

function isKept(statusCode: number, payload: unknown): boolean {
  if (statusCode >= 200 && statusCode < 300) return true;
  if (statusCode < 400 || statusCode >= 500 || statusCode === 408 || statusCode === 429) return false;
  if (statusCode === 409 && typeof payload === 'string' && payload.includes('"REVISION_MISMATCH"')) return false;
  return true;
}

export function registerIdempotency(app: FastifyInstance, store: Store, leaseMs: number, clock: () => number): void {
  app.decorateRequest('idempotencyKey', null);

  app.addHook('preHandler', async (request: FastifyRequest, reply: FastifyReply) => {
    if (request.routeOptions.config.idempotent !== true) return;
    const raw = request.headers['idempotency-key'];
    const key = Array.isArray(raw) ? raw[0] : raw;
    if (key === undefined || key === '') return;
    if (key.length > MAX_KEY_LENGTH) {
      throw new ApiError('INVALID_ARGUMENT', 'Idempotency-Key is too long', {
        details: { 'header.idempotency-key': `must be at most ${MAX_KEY_LENGTH} characters` },
      });
    }
    const { orgId } = authOf(request);
    const path = request.url.split('?')[0] ?? request.url;
    const hash = requestHash(request.method, path, request.body);
    const claim = await store.claimIdempotencyKey(orgId, key, hash, clock(), leaseMs);
    switch (claim.kind) {
      case 'claimed':
        request.idempotencyKey = key;
        return;
      case 'replay':
        await reply.code(claim.response.statusCode).headers(claim.response.headers).send(claim.response.body);
        return reply;
      case 'mismatch':
        throw new ApiError('IDEMPOTENCY_KEY_REUSED', 'idempotency key reused with different request parameters', {
          details: { expected_request_hash: claim.storedHash.slice(0, 8), provided_request_hash: hash.slice(0, 8) },
        });
      case 'in_flight':
        throw new ApiError('RATE_LIMITED', 'idempotency key is already in-flight', { retryAfterMs: IN_FLIGHT_RETRY_MS });
    }
  });

  app.addHook('onSend', async (request, reply, payload) => {
    const key = request.idempotencyKey;
    if (key === null || request.auth === null) return payload;
    request.idempotencyKey = null;
    if (isKept(reply.statusCode, payload) && typeof payload === 'string') {
      const headers: Record<string, string> = {};
      for (const name of KEPT_HEADERS) {
        const v = reply.getHeader(name);
        if (v !== undefined) headers[name] = String(v);
      }
      await store.completeIdempotencyKey(request.auth.orgId, key, { statusCode: reply.statusCode, headers, body: payload });
    } else {
      await store.releaseIdempotencyKey(request.auth.orgId, key);
    }
    return payload;
  });
}
