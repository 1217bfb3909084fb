/**
 * Load-generator process for the lifecycle benchmark: runs one phase (create,
 * get, sleep or wake) over keep-alive connections at a fixed concurrency and
 * returns every request's latency. The connections are the lean client of
 * lib/raw-http.ts, or node:http's Agent (`client: 'http'`, as before
 * 2026-11-29 14:00), which costs the shared box several times the CPU.
 */
import { randomUUID } from 'node:crypto';
import type { Response } from '../lib/http.js';
import { JsonClient } from '../lib/http.js';
import { RawConnection } from '../lib/raw-http.js';
import { serveRpc } from '../lib/rpc.js';

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
const CREATE_BODY = JSON.stringify({ vcpu: 0.25, memory_mib: 32, storage_gib: 1 });

const MACHINE_ID = /"machine_id":"([^"]+)"/;

export type ClientKind = 'raw' | 'http';

/** Sends one request on the connection of worker `k`. */
type Send = (k: number, method: string, path: string, body: string | undefined, headers: Record<string, string>) => Promise<Response>;

let send: Send | undefined;

/** Runs `task(i, k)` for i in [0, count) on `concurrency` workers; k is the worker (its connection). */
async function forEachOnWorkers(count: number, concurrency: number, task: (i: number, k: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (k: number) => {
    while (next < count) await task(next++, k);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, (_, k) => worker(k)));
}

async function runPhase(p: PhaseParams): Promise<PhaseResult> {
  if (send === undefined) throw new Error('init first');
  const c = send;
  const n = p.op === 'create' ? (p.count ?? 0) : (p.ids?.length ?? 0);
  const latencies = new Float64Array(n);
  const statuses: Record<string, number> = {};
  const errorSamples: string[] = [];
  const ids: string[] = [];
  let errors = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await forEachOnWorkers(n, p.concurrency, async (i, k) => {
    const headers: Record<string, string> = p.idempotency && p.op !== 'get' ? { 'idempotency-key': randomUUID() } : {};
    const id = p.ids?.[i];
    const r =
      p.op === 'create'
        ? await c(k, 'POST', '/v1/machines', CREATE_BODY, headers)
        : p.op === 'get'
          ? await c(k, 'GET', `/v1/machines/${id}`, undefined, headers)
          : await c(k, 'POST', `/v1/machines/${id}/${p.op}`, undefined, headers);
    latencies[i] = r.ms;
    statuses[r.status] = (statuses[r.status] ?? 0) + 1;
    if (r.status >= 300) {
      errors++;
      if (errorSamples.length < 5) errorSamples.push(`${r.status} ${r.body.slice(0, 200)}`);
    } else if (p.op === 'create') {
      ids.push(MACHINE_ID.exec(r.body)![1]!);
    }
  });
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return { latencies, errors, errorSamples, statuses, ids, wallMs, cpuMs: (cpu.user + cpu.system) / 1000 };
}

serveRpc({
  init: (p: { baseUrl: string; apiKey: string; sockets: number; client: ClientKind }) => {
    if (p.client === 'http') {
      const json = new JsonClient(p.baseUrl, p.apiKey, p.sockets);
      send = (_k, method, path, body, headers) => json.send(method, path, body === undefined ? undefined : (JSON.parse(body) as unknown), headers);
    } else {
      const u = new URL(p.baseUrl);
      const connections = Array.from({ length: p.sockets }, () => new RawConnection(u.hostname, Number(u.port), p.apiKey));
      send = (k, method, path, body, headers) => connections[k]!.send(method, path, body, headers);
    }
    return true;
  },
  phase: (p: PhaseParams) => runPhase(p),
});
