/** A minimal keep-alive JSON client on node:http (no dependencies, cheaper than fetch). */
import { Agent, request, type RequestOptions } from 'node:http';

export interface Response {
  readonly status: number;
  readonly body: string;
  /** Round trip in milliseconds, request start to last byte. */
  readonly ms: number;
}

/** One request; the whole body as text, and how long it took. */
function roundTrip(options: RequestOptions, payload: string | undefined, timeoutMs: number): Promise<Response> {
  const start = performance.now();
  const what = `${options.method} ${options.path}`;
  return new Promise((ok, fail) => {
    const req = request(options, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => ok({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), ms: performance.now() - start }));
      res.on('error', fail);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`${what}: no answer in ${timeoutMs / 1000} s`)));
    req.on('error', fail);
    req.end(payload);
  });
}

export class JsonClient {
  private readonly agent: Agent;
  private readonly host: string;
  private readonly port: number;

  constructor(
    baseUrl: string,
    private readonly apiKey: string | undefined,
    maxSockets = 64,
  ) {
    const u = new URL(baseUrl);
    this.host = u.hostname;
    this.port = Number(u.port);
    this.agent = new Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets });
  }

  send(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Response> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const h: Record<string, string> = { accept: 'application/json', ...headers };
    if (this.apiKey !== undefined) h.authorization = `Bearer ${this.apiKey}`;
    if (payload !== undefined) {
      h['content-type'] = 'application/json';
      h['content-length'] = String(Buffer.byteLength(payload));
    }
    return roundTrip({ host: this.host, port: this.port, method, path, headers: h, agent: this.agent }, payload, 60_000);
  }

  /** Like `send`, but throws unless the status is `expect` (or one of them). */
  async json<T>(method: string, path: string, body?: unknown, expect: readonly number[] = [200, 201, 202]): Promise<T> {
    const r = await this.send(method, path, body);
    if (!expect.includes(r.status)) throw new Error(`${method} ${path}: ${r.status} ${r.body.slice(0, 300)}`);
    return JSON.parse(r.body) as T;
  }

  close(): void {
    this.agent.destroy();
  }
}

/** The parts of a LifecycleResponse the benchmarks read. */
export interface Lifecycle {
  readonly machine_id: string;
  readonly desired_state: string;
  readonly status: { readonly phase: string; readonly reason: string; readonly revision: string; readonly last_progress_at: string };
}

/** Counts machines by `phase` (and `phase/reason`), paging through GET /v1/machines. */
export async function countPhases(client: JsonClient): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  let cursor: string | undefined;
  for (let page = 0; page < 10_000; page++) {
    const q = cursor === undefined ? '' : `&cursor=${encodeURIComponent(cursor)}`;
    const r = await client.json<{ items: Lifecycle[]; next_cursor?: string }>('GET', `/v1/machines?limit=500${q}`);
    for (const m of r.items) {
      counts.set(m.status.phase, (counts.get(m.status.phase) ?? 0) + 1);
      const k = `${m.status.phase}/${m.status.reason}`;
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    cursor = r.next_cursor;
    if (cursor === undefined) break;
  }
  return counts;
}

/** One request on a new connection (no keep-alive): with `serve --replicas`, successive calls reach successive replicas. */
export function sendFresh(baseUrl: string, apiKey: string | undefined, method: string, path: string): Promise<Response> {
  const u = new URL(baseUrl);
  const headers: Record<string, string> = { accept: '*/*', connection: 'close' };
  if (apiKey !== undefined) headers.authorization = `Bearer ${apiKey}`;
  return roundTrip({ host: u.hostname, port: Number(u.port), method, path, headers, agent: false }, undefined, 30_000);
}
