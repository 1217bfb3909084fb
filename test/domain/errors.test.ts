import { describe, expect, it } from 'vitest';
import { ApiError, ERROR_CATALOGUE, invalidArgument, machineNotFound, type ErrorCode } from '../../src/domain/errors.js';

/** The contract's "Errors" section, code by code. */
const CONTRACT_CODES: Readonly<Record<string, number>> = {
  AUTH_REQUIRED: 401,
  AUTH_INVALID: 401,
  AUTH_ORG_MISMATCH: 403,
  AUTH_SCOPE_FORBIDDEN: 403,
  INVALID_ARGUMENT: 400,
  MACHINE_NOT_FOUND: 404,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  REVISION_MISMATCH: 409,
  INVALID_STATE: 409,
  IDEMPOTENCY_KEY_REUSED: 409,
  RATE_LIMITED: 429,
  QUOTA_EXCEEDED: 403,
  CAPACITY_EXCEEDED: 409,
  PAYLOAD_TOO_LARGE: 413,
  DEPENDENCY_UNAVAILABLE: 503,
  INTERNAL: 500,
};
/** `<THING>_NOT_FOUND` (404) for sub-resources. */
const SUB_RESOURCE_NOT_FOUND = /^[A-Z]+(_[A-Z]+)*_NOT_FOUND$/;

const catalogueCodes = Object.keys(ERROR_CATALOGUE) as ErrorCode[];

/** x-should-retry: false on every error a blind retry cannot fix: 409s and all 4xx but 408/429. */
const blindRetryCannotFix = (status: number): boolean => status >= 400 && status < 500 && status !== 408 && status !== 429;

describe('ERROR_CATALOGUE against the contract', () => {
  it.each(Object.entries(CONTRACT_CODES))('%s is catalogued with status %i', (code, status) => {
    expect(Object.keys(ERROR_CATALOGUE)).toContain(code);
    expect(ERROR_CATALOGUE[code as ErrorCode].status).toBe(status);
  });

  it('lists no code the contract does not (apart from sub-resource <THING>_NOT_FOUND)', () => {
    const extra = catalogueCodes.filter((code) => !(code in CONTRACT_CODES) && !SUB_RESOURCE_NOT_FOUND.test(code));
    expect(extra).toEqual([]);
  });

  it('every sub-resource <THING>_NOT_FOUND is a 404', () => {
    for (const code of catalogueCodes.filter((c) => !(c in CONTRACT_CODES))) {
      expect(code).toMatch(SUB_RESOURCE_NOT_FOUND);
      expect(ERROR_CATALOGUE[code].status).toBe(404);
    }
  });

  it.each(catalogueCodes)('%s: x-should-retry is false exactly when a blind retry cannot fix it', (code) => {
    const { status, shouldRetry } = ERROR_CATALOGUE[code];
    expect(shouldRetry).toBe(!blindRetryCannotFix(status));
    expect(new ApiError(code, 'm').shouldRetry).toBe(!blindRetryCannotFix(status));
  });

  it('the 409s the contract names never ask for a blind retry', () => {
    for (const code of ['REVISION_MISMATCH', 'IDEMPOTENCY_KEY_REUSED', 'INVALID_STATE', 'CAPACITY_EXCEEDED'] as const) {
      expect(ERROR_CATALOGUE[code].shouldRetry).toBe(false);
    }
  });

  it('retryable in the envelope where the contract says so', () => {
    expect(new ApiError('REVISION_MISMATCH', 'stale').retryable).toBe(true);
    expect(new ApiError('DEPENDENCY_UNAVAILABLE', 'down').retryable).toBe(true);
    expect(new ApiError('RATE_LIMITED', 'busy').retryable).toBe(true);
    expect(new ApiError('INVALID_ARGUMENT', 'bad').retryable).toBe(false);
    expect(new ApiError('INVALID_STATE', 'no').retryable).toBe(false);
  });
});

describe('ApiError', () => {
  it('is an Error with its code, status and message', () => {
    const err = new ApiError('INVALID_STATE', 'nope');
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe('ApiError');
    expect(err.code).toBe('INVALID_STATE');
    expect(err.status).toBe(409);
    expect(err.message).toBe('nope');
  });

  it('retryable can be overridden per error', () => {
    expect(new ApiError('INTERNAL', 'x', { retryable: false }).retryable).toBe(false);
    expect(new ApiError('INVALID_ARGUMENT', 'x', { retryable: true }).toEnvelope().retryable).toBe(true);
  });
});

describe('toEnvelope', () => {
  it('minimal: error_code, message, retryable and nothing else', () => {
    expect(new ApiError('MACHINE_NOT_FOUND', 'machine not found').toEnvelope()).toStrictEqual({
      error_code: 'MACHINE_NOT_FOUND',
      message: 'machine not found',
      retryable: false,
    });
  });

  it('no details key when details are empty', () => {
    const env = new ApiError('INVALID_ARGUMENT', 'bad', { details: {} }).toEnvelope();
    expect(env).not.toHaveProperty('details');
  });

  it('details when there are some', () => {
    const details = { 'body.vcpu': 'must be a multiple of 0.25' };
    expect(new ApiError('INVALID_ARGUMENT', 'bad', { details }).toEnvelope()).toStrictEqual({
      error_code: 'INVALID_ARGUMENT',
      message: 'bad',
      retryable: false,
      details,
    });
  });

  it('retry_after_ms when set, and only then', () => {
    expect(new ApiError('RATE_LIMITED', 'busy', { retryAfterMs: 250 }).toEnvelope()).toStrictEqual({
      error_code: 'RATE_LIMITED',
      message: 'busy',
      retryable: true,
      retry_after_ms: 250,
    });
    expect(new ApiError('RATE_LIMITED', 'busy').toEnvelope()).not.toHaveProperty('retry_after_ms');
  });

  it('carries only envelope keys and survives JSON', () => {
    const env = new ApiError('REVISION_MISMATCH', 'stale', {
      details: { expected_revision: '42', provided_revision: '41' },
      retryAfterMs: 0,
    }).toEnvelope();
    expect(Object.keys(env).sort()).toEqual(['details', 'error_code', 'message', 'retry_after_ms', 'retryable']);
    expect(JSON.parse(JSON.stringify(env))).toEqual(env);
  });
});

describe('helpers', () => {
  it('invalidArgument: 400 INVALID_ARGUMENT with the given details', () => {
    const err = invalidArgument({ 'body.memory_mib': 'must be an integer' });
    expect(err.status).toBe(400);
    expect(err.toEnvelope()).toMatchObject({ error_code: 'INVALID_ARGUMENT', details: { 'body.memory_mib': 'must be an integer' } });
  });

  it('machineNotFound: 404 MACHINE_NOT_FOUND without details', () => {
    const err = machineNotFound();
    expect(err.status).toBe(404);
    expect(err.toEnvelope()).not.toHaveProperty('details');
    expect(err.code).toBe('MACHINE_NOT_FOUND');
  });
});
