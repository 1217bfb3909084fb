/**
 * The HTTP client of `hangar machines`: fetch-based, one method per call.
 * Every POST/PATCH/DELETE carries an `Idempotency-Key`; network errors, 429
 * and 503 are retried a few times with the same key, honouring
 * `retry-after-ms` / `retry_after_ms`.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { LifecycleResponse, MachineListItem } from '../domain/types.js';

export type { LifecycleResponse, MachineListItem };

export const DEFAULT_URL = 'http://127.0.0.1:8080';

export interface MachineList {
  items: MachineListItem[];
  next_cursor?: string;
}

export interface ErrorBody {
  error_code: string;
  message: string;
  retryable?: boolean;
  retry_after_ms?: number;
  details?: Record<string, string>;
}

/** An error answer of the API (non-2xx), or an unusable one. */
export class ApiCallError extends Error {
  constructor(
    readonly status: number,
    readonly body: ErrorBody,
  ) {
    super(`${body.error_code}: ${body.message}`);
    this.name = 'ApiCallError';
  }
}

/** Bad flags or a missing key: exit 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export interface ConnectionOptions {
  url?: string;
  apiKey?: string;
  org?: string;
}

export interface ClientConfig {
  readonly baseUrl: string;
  readonly apiKey: string;
  readonly orgId: string | undefined;
}

/** Flags, else HANGAR_URL / HANGAR_API_KEY / HANGAR_ORG_ID, else the default URL and `<data dir>/admin.key`. */
export function resolveConfig(opts: ConnectionOptions, env: NodeJS.ProcessEnv = process.env): ClientConfig {
  const baseUrl = (opts.url ?? env['HANGAR_URL'] ?? DEFAULT_URL).replace(/\/+$/, '');
  try {
    const parsed = new URL(baseUrl);
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new Error('not http');
  } catch {
    throw new UsageError(`invalid server URL "${baseUrl}" (want e.g. ${DEFAULT_URL})`);
  }
  let apiKey = nonEmpty(opts.apiKey) ?? nonEmpty(env['HANGAR_API_KEY']);
  if (apiKey === undefined) {
    const keyFile = join(resolve(env['HANGAR_DATA_DIR'] ?? './data'), 'admin.key');
    if (existsSync(keyFile)) apiKey = nonEmpty(readFileSync(keyFile, 'utf8').trim());
    if (apiKey === undefined) {
      throw new UsageError(`no API key: pass --api-key, set HANGAR_API_KEY, or run where ${keyFile} exists`);
    }
  }
  return { baseUrl, apiKey, orgId: nonEmpty(opts.org) ?? nonEmpty(env['HANGAR_ORG_ID']) };
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

export interface RetryPolicy {
  /** Attempts in all, the first included. */
  readonly attempts: number;
  /** Backoff when the server names no delay: base * 2^n, capped. */
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
}

const DEFAULT_RETRY: RetryPolicy = { attempts: 4, baseDelayMs: 200, maxDelayMs: 5_000 };

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface ApiResult<T> {
  readonly status: number;
  readonly body: T;
}

export class HangarClient {
  constructor(
    readonly config: ClientConfig,
    private readonly retry: RetryPolicy = DEFAULT_RETRY,
  ) {}

  /** Headers every call sends (the stream too). */
  authHeaders(): Record<string, string> {
    const h: Record<string, string> = { authorization: `Bearer ${this.config.apiKey}` };
    if (this.config.orgId !== undefined) h['x-dedalus-org-id'] = this.config.orgId;
    return h;
  }

  url(path: string): string {
    return this.config.baseUrl + path;
  }

  async request<T>(method: string, path: string, opts: { body?: unknown; ifMatch?: string } = {}): Promise<ApiResult<T>> {
    const headers: Record<string, string> = { ...this.authHeaders(), accept: 'application/json' };
    if (method !== 'GET') headers['idempotency-key'] = randomUUID();
    if (opts.ifMatch !== undefined) headers['if-match'] = /^(".*"|\*|W\/.*)$/.test(opts.ifMatch) ? opts.ifMatch : `"${opts.ifMatch}"`;
    let body: string | undefined;
    if (opts.body !== undefined) {
      body = JSON.stringify(opts.body);
      headers['content-type'] = 'application/json';
    }
    for (let attempt = 1; ; attempt++) {
      const last = attempt >= this.retry.attempts;
      let res: Response;
      try {
        res = await fetch(this.url(path), { method, headers, ...(body !== undefined ? { body } : {}) });
      } catch (err) {
        if (last) throw new Error(`cannot reach ${this.config.baseUrl}: ${describeFetchError(err)}`);
        await sleep(this.backoff(attempt));
        continue;
      }
      const text = await res.text();
      const parsed = parseJson(text);
      if (res.ok) return { status: res.status, body: parsed as T };
      const envelope = toErrorBody(res.status, parsed, text);
      if ((res.status === 429 || res.status === 503) && !last) {
        await sleep(retryDelay(res.headers, envelope) ?? this.backoff(attempt));
        continue;
      }
      throw new ApiCallError(res.status, envelope);
    }
  }

  private backoff(attempt: number): number {
    return Math.min(this.retry.maxDelayMs, this.retry.baseDelayMs * 2 ** (attempt - 1));
  }

  listMachines(q: { limit?: number; cursor?: string }) {
    const params = new URLSearchParams();
    if (q.limit !== undefined) params.set('limit', String(q.limit));
    if (q.cursor !== undefined) params.set('cursor', q.cursor);
    const qs = params.toString();
    return this.request<MachineList>('GET', `/v1/machines${qs === '' ? '' : `?${qs}`}`);
  }

  createMachine(body: Record<string, unknown>) {
    return this.request<LifecycleResponse>('POST', '/v1/machines', { body });
  }

  getMachine(id: string) {
    return this.request<LifecycleResponse>('GET', `/v1/machines/${encodeURIComponent(id)}`);
  }

  updateMachine(id: string, body: Record<string, unknown>, ifMatch?: string) {
    return this.request<LifecycleResponse>('PATCH', `/v1/machines/${encodeURIComponent(id)}`, { body, ...(ifMatch !== undefined ? { ifMatch } : {}) });
  }

  deleteMachine(id: string, ifMatch?: string) {
    return this.request<LifecycleResponse>('DELETE', `/v1/machines/${encodeURIComponent(id)}`, ifMatch !== undefined ? { ifMatch } : {});
  }

  sleepMachine(id: string, ifMatch?: string) {
    return this.request<LifecycleResponse>('POST', `/v1/machines/${encodeURIComponent(id)}/sleep`, ifMatch !== undefined ? { ifMatch } : {});
  }

  wakeMachine(id: string, ifMatch?: string) {
    return this.request<LifecycleResponse>('POST', `/v1/machines/${encodeURIComponent(id)}/wake`, ifMatch !== undefined ? { ifMatch } : {});
  }

  streamUrl(id: string): string {
    return this.url(`/v1/machines/${encodeURIComponent(id)}/status/stream`);
  }
}

export function parseJson(text: string): unknown {
  if (text === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The envelope of an error answer; a made-up one when the body is not an envelope (a proxy's HTML page, say). */
export function toErrorBody(status: number, parsed: unknown, text: string): ErrorBody {
  if (isRecord(parsed) && typeof parsed['error_code'] === 'string') {
    const out: ErrorBody = { error_code: parsed['error_code'], message: typeof parsed['message'] === 'string' ? parsed['message'] : '' };
    if (typeof parsed['retryable'] === 'boolean') out.retryable = parsed['retryable'];
    if (typeof parsed['retry_after_ms'] === 'number') out.retry_after_ms = parsed['retry_after_ms'];
    if (isRecord(parsed['details'])) {
      out.details = Object.fromEntries(Object.entries(parsed['details']).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]));
    }
    return out;
  }
  const snippet = text.trim().slice(0, 200);
  return { error_code: `HTTP_${status}`, message: snippet === '' ? 'unexpected response without a body' : `unexpected response: ${snippet}` };
}

function retryDelay(headers: Headers, envelope: ErrorBody): number | undefined {
  const header = Number(headers.get('retry-after-ms') ?? Number.NaN);
  if (Number.isFinite(header) && header >= 0) return Math.min(header, 30_000);
  if (envelope.retry_after_ms !== undefined && envelope.retry_after_ms >= 0) return Math.min(envelope.retry_after_ms, 30_000);
  const seconds = Number(headers.get('retry-after') ?? Number.NaN);
  if (Number.isFinite(seconds) && seconds >= 0) return Math.min(seconds * 1000, 30_000);
  return undefined;
}

export function describeFetchError(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as Error & { cause?: unknown }).cause;
    if (cause instanceof Error) {
      const code = (cause as Error & { code?: unknown }).code;
      return typeof code === 'string' ? `${code} ${cause.message}` : cause.message;
    }
    return err.message;
  }
  return String(err);
}
