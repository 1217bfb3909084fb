/** A small HTTP client for tests: JSON in, status + headers + parsed body out. */

export interface ApiResponse<T = unknown> {
  readonly status: number;
  readonly headers: Headers;
  readonly body: T;
  readonly text: string;
}

export interface RequestOptions {
  readonly key?: string | null;
  readonly headers?: Record<string, string>;
  readonly body?: unknown;
  /** Sent as is (malformed JSON tests). */
  readonly rawBody?: string;
}

export class Api {
  constructor(
    readonly baseUrl: string,
    readonly key: string,
  ) {}

  // Bodies are whatever the server sent: tests assert their shape, so `any` is the honest type here.
  async request<T = any>(method: string, path: string, opts: RequestOptions = {}): Promise<ApiResponse<T>> {
    const headers: Record<string, string> = { ...(opts.headers ?? {}) };
    const key = opts.key === undefined ? this.key : opts.key;
    if (key !== null) headers['authorization'] ??= `Bearer ${key}`;
    let body: string | undefined;
    if (opts.rawBody !== undefined) body = opts.rawBody;
    else if (opts.body !== undefined) body = JSON.stringify(opts.body);
    if (body !== undefined) headers['content-type'] ??= 'application/json';
    const res = await fetch(this.baseUrl + path, { method, headers, ...(body !== undefined ? { body } : {}) });
    const text = await res.text();
    let parsed: unknown = undefined;
    try {
      parsed = text === '' ? undefined : JSON.parse(text);
    } catch {
      parsed = text;
    }
    return { status: res.status, headers: res.headers, body: parsed as T, text };
  }

  get<T = any>(path: string, opts?: RequestOptions) {
    return this.request<T>('GET', path, opts);
  }
  post<T = any>(path: string, body?: unknown, opts: RequestOptions = {}) {
    return this.request<T>('POST', path, { ...opts, ...(body !== undefined ? { body } : {}) });
  }
  patch<T = any>(path: string, body?: unknown, opts: RequestOptions = {}) {
    return this.request<T>('PATCH', path, { ...opts, ...(body !== undefined ? { body } : {}) });
  }
  delete<T = any>(path: string, opts?: RequestOptions) {
    return this.request<T>('DELETE', path, opts);
  }

  createMachine(body: Record<string, unknown> = { vcpu: 1, memory_mib: 512, storage_gib: 5 }) {
    return this.post('/v1/machines', body);
  }

  /** Polls GET until `predicate` holds, failing after `timeoutMs`. */
  async waitFor(machineId: string, predicate: (m: any) => boolean, timeoutMs = 10_000): Promise<any> {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    while (Date.now() < deadline) {
      const res = await this.get(`/v1/machines/${machineId}`);
      last = res.body;
      if (res.status === 200 && predicate(res.body)) return res.body;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`timed out waiting for ${machineId}; last seen ${JSON.stringify(last)}`);
  }

  waitForPhase(machineId: string, phase: string, timeoutMs?: number) {
    return this.waitFor(machineId, (m) => m.status.phase === phase, timeoutMs);
  }
}
