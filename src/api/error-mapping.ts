/**
 * Every error leaves in the contract's envelope: ApiError as it is, Fastify's
 * own errors (validation, body parsing, size limit) mapped to INVALID_ARGUMENT
 * or PAYLOAD_TOO_LARGE, anything else a logged 500 INTERNAL.
 */
import type { FastifyError, FastifyReply } from 'fastify';
import type { ErrorEnvelope } from '../domain/errors.js';
import { ApiError } from '../domain/errors.js';

interface AjvError {
  instancePath: string;
  keyword: string;
  message?: string;
  params: Record<string, unknown>;
}

const CONTEXT_PREFIX: Record<string, string> = { body: 'body', params: 'path', querystring: 'query', headers: 'header' };

/** Ajv's errors as `details`: one entry per offending field, e.g. `body.vcpu`. */
export function validationDetails(context: string | undefined, errors: readonly AjvError[]): Record<string, string> {
  const prefix = CONTEXT_PREFIX[context ?? 'body'] ?? context ?? 'body';
  const details: Record<string, string> = {};
  for (const e of errors) {
    const path = e.instancePath.split('/').filter(Boolean).join('.');
    let field = path === '' ? prefix : `${prefix}.${path}`;
    let message = e.message ?? 'is invalid';
    if (e.keyword === 'additionalProperties' && typeof e.params['additionalProperty'] === 'string') {
      field = `${field}.${e.params['additionalProperty']}`;
      message = 'unknown field';
    } else if (e.keyword === 'required' && typeof e.params['missingProperty'] === 'string') {
      field = `${field}.${e.params['missingProperty']}`;
      message = 'is required';
    } else if (e.keyword === 'type' && path === '' && prefix === 'body') {
      message = 'a JSON object is required';
    }
    details[field] ??= message;
  }
  return details;
}

/** Connection-level failures of either store: a retry can succeed once it is back. */
const STORE_DOWN_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  'CONNECT_TIMEOUT',
  'SQLITE_BUSY',
  'SQLITE_LOCKED',
]);

export function isStoreUnavailable(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return false;
  // PostgreSQL SQLSTATE class 08 (connection exception) and 57P01-03 (server shutting down, crashed, starting).
  return STORE_DOWN_CODES.has(code) || /^08/.test(code) || /^57P0[1-3]$/.test(code);
}

export function toApiError(err: FastifyError | ApiError | Error): ApiError {
  if (err instanceof ApiError) return err;
  if (isStoreUnavailable(err)) return new ApiError('DEPENDENCY_UNAVAILABLE', 'store unavailable');
  const fe = err as FastifyError & { validation?: AjvError[]; validationContext?: string };
  if (Array.isArray(fe.validation)) {
    return new ApiError('INVALID_ARGUMENT', 'request validation failed', {
      details: validationDetails(fe.validationContext, fe.validation),
    });
  }
  switch (fe.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ApiError('PAYLOAD_TOO_LARGE', 'request body is too large');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ApiError('INVALID_ARGUMENT', 'request body must be application/json', {
        details: { 'header.content-type': 'must be application/json' },
      });
    default:
      break;
  }
  if (err instanceof SyntaxError || (typeof fe.statusCode === 'number' && fe.statusCode === 400)) {
    return new ApiError('INVALID_ARGUMENT', 'malformed request', { details: { body: err.message } });
  }
  if (typeof fe.statusCode === 'number' && fe.statusCode === 413) return new ApiError('PAYLOAD_TOO_LARGE', 'request body is too large');
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    return new ApiError('INVALID_ARGUMENT', err.message);
  }
  return new ApiError('INTERNAL', 'internal error');
}

/** Headers that go with an error: SDK retry hints. */
export function errorHeaders(err: ApiError): Record<string, string> {
  const headers: Record<string, string> = {};
  if (!err.shouldRetry) headers['x-should-retry'] = 'false';
  if (err.retryAfterMs !== undefined) headers['retry-after-ms'] = String(err.retryAfterMs);
  return headers;
}

export function sendError(reply: FastifyReply, err: ApiError): FastifyReply {
  const envelope: ErrorEnvelope = err.toEnvelope();
  return reply.code(err.status).headers(errorHeaders(err)).type('application/json; charset=utf-8').send(envelope);
}
