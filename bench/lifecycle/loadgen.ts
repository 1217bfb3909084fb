/**
 * Load-generator process for the lifecycle benchmark: runs one phase (create,
 * get, sleep or wake) over keep-alive connections at a fixed concurrency and
 * returns every request's latency.
 */
import { randomUUID } from 'node:crypto';
import { JsonClient } from '../lib/http.js';
import { serveRpc } from '../lib/rpc.js';
import { forEachLimit } from '../lib/util.js';

export type Op = 'create' | 'get' | 'sleep' | 'wake';

export interface PhaseParams {
  readonly op: Op;
  /** Machines to act on (get/sleep/wake). */
  readonly ids?: readonly string[];
  /** Machines to create. */
  readonly count?: number;
  readonly concurrency: number;
  readonly idempotency: boolean;
}

export interface PhaseResult {
  readonly latencies: Float64Array;
  readonly errors: number;
  readonly errorSamples: string[];
  readonly statuses: Record<string, number>;
  readonly ids: string[];
  readonly wallMs: number;
  readonly cpuMs: number;
}

/** Smallest machine: many fit on a simulated host. */
const CREATE_BODY = { vcpu: 0.25, memory_mib: 32, storage_gib: 1 };

let client: JsonClient | undefined;

async function runPhase(p: PhaseParams): Promise<PhaseResult> {
  if (client === undefined) throw new Error('init first');
  const c = client;
  const n = p.op === 'create' ? (p.count ?? 0) : (p.ids?.length ?? 0);
  const latencies = new Float64Array(n);
  const statuses: Record<string, number> = {};
  const errorSamples: string[] = [];
  const ids: string[] = [];
  let errors = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await forEachLimit(n, p.concurrency, async (i) => {
    const headers: Record<string, string> = p.idempotency && p.op !== 'get' ? { 'idempotency-key': randomUUID() } : {};
    const id = p.ids?.[i];
    const r =
      p.op === 'create'
        ? await c.send('POST', '/v1/machines', CREATE_BODY, headers)
        : p.op === 'get'
          ? await c.send('GET', `/v1/machines/${id}`, undefined, headers)
          : await c.send('POST', `/v1/machines/${id}/${p.op}`, undefined, headers);
    latencies[i] = r.ms;
    statuses[r.status] = (statuses[r.status] ?? 0) + 1;
    if (r.status >= 300) {
      errors++;
      if (errorSamples.length < 5) errorSamples.push(`${r.status} ${r.body.slice(0, 200)}`);
    } else if (p.op === 'create') {
      ids.push((JSON.parse(r.body) as { machine_id: string }).machine_id);
    }
  });
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return { latencies, errors, errorSamples, statuses, ids, wallMs, cpuMs: (cpu.user + cpu.system) / 1000 };
}

serveRpc({
  init: (p: { baseUrl: string; apiKey: string; sockets: number }) => {
    client = new JsonClient(p.baseUrl, p.apiKey, p.sockets);
    return true;
  },
  phase: (p: PhaseParams) => runPhase(p),
});
