/**
 * The one error catalogue: every contract error_code with its HTTP status,
 * whether a retry can succeed, and whether SDKs should retry blindly
 * (`x-should-retry`). Routes throw ApiError; the API layer renders it.
 */

export const ERROR_CATALOGUE = {
  AUTH_REQUIRED: { status: 401, retryable: false, shouldRetry: false },
  AUTH_INVALID: { status: 401, retryable: false, shouldRetry: false },
  AUTH_ORG_MISMATCH: { status: 403, retryable: false, shouldRetry: false },
  AUTH_SCOPE_FORBIDDEN: { status: 403, retryable: false, shouldRetry: false },
  INVALID_ARGUMENT: { status: 400, retryable: false, shouldRetry: false },
  MACHINE_NOT_FOUND: { status: 404, retryable: false, shouldRetry: false },
  EXECUTION_NOT_FOUND: { status: 404, retryable: false, shouldRetry: false },
  NOT_FOUND: { status: 404, retryable: false, shouldRetry: false },
  METHOD_NOT_ALLOWED: { status: 405, retryable: false, shouldRetry: false },
  REVISION_MISMATCH: { status: 409, retryable: true, shouldRetry: false },
  INVALID_STATE: { status: 409, retryable: false, shouldRetry: false },
  IDEMPOTENCY_KEY_REUSED: { status: 409, retryable: false, shouldRetry: false },
  CAPACITY_EXCEEDED: { status: 409, retryable: false, shouldRetry: false },
  PAYLOAD_TOO_LARGE: { status: 413, retryable: false, shouldRetry: false },
  QUOTA_EXCEEDED: { status: 403, retryable: false, shouldRetry: false },
  RATE_LIMITED: { status: 429, retryable: true, shouldRetry: true },
  INTERNAL: { status: 500, retryable: true, shouldRetry: true },
  DEPENDENCY_UNAVAILABLE: { status: 503, retryable: true, shouldRetry: true },
} as const satisfies Record<string, { status: number; retryable: boolean; shouldRetry: boolean }>;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

/** The contract's error envelope. */
export interface ErrorEnvelope {
  error_code: string;
  message: string;
  retryable: boolean;
  retry_after_ms?: number;
  details?: Record<string, string>;
}

export class ApiError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, string> | undefined;
  readonly retryAfterMs: number | undefined;
  readonly retryable: boolean;

  constructor(
    code: ErrorCode,
    message: string,
    opts: { details?: Record<string, string>; retryAfterMs?: number; retryable?: boolean } = {},
  ) {
    super(message);
    this.name = 'ApiError';
    this.code = code;
    this.details = opts.details;
    this.retryAfterMs = opts.retryAfterMs;
    this.retryable = opts.retryable ?? ERROR_CATALOGUE[code].retryable;
  }

  get status(): number {
    return ERROR_CATALOGUE[this.code].status;
  }

  get shouldRetry(): boolean {
    return ERROR_CATALOGUE[this.code].shouldRetry;
  }

  toEnvelope(): ErrorEnvelope {
    const env: ErrorEnvelope = { error_code: this.code, message: this.message, retryable: this.retryable };
    if (this.retryAfterMs !== undefined) env.retry_after_ms = this.retryAfterMs;
    if (this.details !== undefined && Object.keys(this.details).length > 0) env.details = this.details;
    return env;
  }
}

export function invalidArgument(details: Record<string, string>, message = 'invalid request'): ApiError {
  return new ApiError('INVALID_ARGUMENT', message, { details });
}

export function machineNotFound(): ApiError {
  return new ApiError('MACHINE_NOT_FOUND', 'machine not found');
}
