/**
 * Lifecycle benchmark: mutations per second and latency of create / get /
 * sleep / wake over HTTP against a real Hangar process (simulated runtime,
 * embedded SQLite), driven by 1-2 load-generator processes with keep-alive
 * connections. Runs once without and once with an Idempotency-Key on every
 * mutation. Usage: node dist/bench/lifecycle/run.js [--quick] [--machines M]
 * [--concurrency C] [--clients 1|2] [--client raw|http] [--sim-latency-ms L] [--idempotency off|on|both] [--runs N]
 * [--cpu-prof DIR]
 */
import { join } from 'node:path';
import { flag, numberOption, option } from '../lib/args.js';
import { countPhases, JsonClient } from '../lib/http.js';
import { CpuMeter } from '../lib/proc.js';
import { Worker } from '../lib/rpc.js';
import { REPO_ROOT, startHangarProcess, type HangarProcess } from '../lib/server.js';
import { concat, fmt, markdownTable, summarize, type Summary } from '../lib/stats.js';
import { runBenchmark, writeResults } from '../lib/results.js';
import { waitUntil } from '../lib/util.js';
import type { ClientKind, Op, PhaseParams, PhaseResult } from './loadgen.js';

const quick = flag('quick');
const M = numberOption('machines', quick ? 500 : 5000);
const C = numberOption('concurrency', 64);
const CLIENTS = numberOption('clients', 1);
const SIM_LATENCY = numberOption('sim-latency-ms', 1);
const IDEM = option('idempotency') ?? 'both';
const PROF_DIR = option('cpu-prof');
const CONVERGE_TIMEOUT_MS = numberOption('converge-timeout-ms', 180_000);
const CLIENT = (option('client') ?? 'raw') as ClientKind;
const RUNS = numberOption('runs', 1);
if (CLIENT !== 'raw' && CLIENT !== 'http') throw new Error('--client is raw or http');

interface OpRow {
  readonly op: Op;
  readonly latency: Summary;
  readonly opsPerSec: number;
  readonly wallMs: number;
  readonly errors: number;
  readonly statuses: Record<string, number>;
  /** Server CPU during the phase, in cores. */
  readonly serverCores: number;
  /** Load generators' CPU during the phase, in cores. */
  readonly clientCores: number;
  /** Time after the phase until every machine reached the target phase (ms), if waited for. */
  readonly convergeMs?: number;
  /**
   * CPU of the server's event-loop thread per request, from the phase's
   * start until every machine converged (µs): what a mutation costs the one
   * thread that bounds throughput, reconciler steps included, and much less
   * sensitive than ops/s to other load on a shared box. (It also counts the
   * convergence polling: /metrics every 100 ms, and a paged list of all
   * machines when the reconciler looks idle.)
   */
  readonly serverUsPerOp?: number;
}

interface RunResult {
  readonly idempotency: boolean;
  readonly rows: OpRow[];
  readonly mutationsPerSec: number;
  /** Server event-loop CPU per mutation, reconciler steps and convergence included (µs). */
  readonly serverUsPerMutation: number;
}

async function phase(
  server: HangarProcess,
  workers: Worker[],
  op: Op,
  idempotency: boolean,
  ids: readonly string[],
): Promise<{ row: OpRow; ids: string[]; meter: CpuMeter }> {
  const meter = new CpuMeter(server.pid);
  const loopMeter = new CpuMeter(server.pid, true);
  const t0 = performance.now();
  const results = await Promise.all(
    workers.map((w, k) => {
      const params: PhaseParams =
        op === 'create'
          ? { op, count: Math.floor(M / workers.length) + (k < M % workers.length ? 1 : 0), concurrency: Math.ceil(C / workers.length), idempotency }
          : { op, ids: ids.filter((_, i) => i % workers.length === k), concurrency: Math.ceil(C / workers.length), idempotency };
      return w.call<PhaseResult>('phase', params);
    }),
  );
  const wallMs = performance.now() - t0;
  const server_ = meter.read();
  const latencies = concat(results.map((r) => r.latencies));
  const statuses: Record<string, number> = {};
  for (const r of results) for (const [k, v] of Object.entries(r.statuses)) statuses[k] = (statuses[k] ?? 0) + v;
  const errors = results.reduce((a, r) => a + r.errors, 0);
  for (const r of results) for (const s of r.errorSamples) console.error(`  ${op} error: ${s}`);
  const row: OpRow = {
    op,
    latency: summarize(latencies),
    opsPerSec: (latencies.length / wallMs) * 1000,
    wallMs,
    errors,
    statuses,
    serverCores: server_.cores,
    clientCores: results.reduce((a, r) => a + r.cpuMs, 0) / wallMs,
  };
  return { row, ids: results.flatMap((r) => r.ids), meter: loopMeter };
}

/** A gauge's value in the server's /metrics text. */
function gaugeOf(metricsText: string, name: string): number | undefined {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(metricsText);
  return m === null ? undefined : Number(m[1]);
}

async function waitPhase(client: JsonClient, phaseName: string, n: number): Promise<number> {
  // Counting phases lists every machine (tens of ms of the server's event loop at 5,000 machines), which
  // would weigh on the convergence it measures: it is done only once the reconciler looks idle (empty
  // queue, no commit since the last look; /metrics is cheap).
  let lastRevision: number | undefined;
  return waitUntil(
    `${n} machines ${phaseName}`,
    async () => {
      const metrics = (await client.send('GET', '/metrics')).body;
      const revision = gaugeOf(metrics, 'hangar_store_revision');
      const idle = gaugeOf(metrics, 'hangar_reconcile_queue_length') === 0 && revision === lastRevision;
      lastRevision = revision;
      return idle && ((await countPhases(client)).get(phaseName) ?? 0) >= n;
    },
    CONVERGE_TIMEOUT_MS,
    100,
  );
}

/** A mutation phase's row once every machine reached `phaseName`. */
async function converged(client: JsonClient, done: { row: OpRow; meter: CpuMeter }, phaseName: string, n: number): Promise<OpRow> {
  const convergeMs = await waitPhase(client, phaseName, n);
  return { ...done.row, convergeMs, serverUsPerOp: (done.meter.read().cpuMs * 1000) / done.row.latency.count };
}

async function runOnce(idempotency: boolean): Promise<RunResult> {
  const nodeArgs = PROF_DIR === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${PROF_DIR}`];
  const server = await startHangarProcess({ simLatencyMs: SIM_LATENCY, simHosts: '8x512/2097152/1000000', nodeArgs });
  const workers = Array.from({ length: CLIENTS }, () => new Worker(join(REPO_ROOT, 'dist/bench/lifecycle/loadgen.js')));
  const admin = new JsonClient(server.url, server.adminKey, 4);
  try {
    await Promise.all(workers.map((w) => w.call('init', { baseUrl: server.url, apiKey: server.adminKey, sockets: Math.ceil(C / CLIENTS), client: CLIENT })));
    console.log(`\n== lifecycle: ${M} machines, concurrency ${C}, ${CLIENTS} load process(es) (${CLIENT} client), sim latency ${SIM_LATENCY} ms, idempotency ${idempotency ? 'on' : 'off'}`);
    const rows: OpRow[] = [];
    const log = (r: OpRow) =>
      console.log(
        `  ${r.op.padEnd(6)} ${fmt(r.opsPerSec, 0).padStart(7)} ops/s  p50 ${fmt(r.latency.p50, 2)} ms  p99 ${fmt(r.latency.p99, 2)} ms  errors ${r.errors}  server ${fmt(r.serverCores, 2)} cores  client ${fmt(r.clientCores, 2)} cores${r.convergeMs === undefined ? '' : `  converged +${fmt(r.convergeMs / 1000, 1)} s`}${r.serverUsPerOp === undefined ? '' : `  event loop ${fmt(r.serverUsPerOp, 0)} us/op`}`,
      );

    const created = await phase(server, workers, 'create', idempotency, []);
    const ids = created.ids;
    rows.push(await converged(admin, created, 'running', ids.length));
    log(rows.at(-1)!);

    const got = await phase(server, workers, 'get', idempotency, ids);
    rows.push(got.row);
    log(got.row);

    const slept = await phase(server, workers, 'sleep', idempotency, ids);
    rows.push(await converged(admin, slept, 'sleeping', ids.length));
    log(rows.at(-1)!);

    const woke = await phase(server, workers, 'wake', idempotency, ids);
    rows.push(await converged(admin, woke, 'running', ids.length));
    log(rows.at(-1)!);

    const muts = rows.filter((r) => r.op !== 'get');
    const count = muts.reduce((a, r) => a + r.latency.count, 0);
    const mutationsPerSec = (count / muts.reduce((a, r) => a + r.wallMs, 0)) * 1000;
    const serverUsPerMutation = muts.reduce((a, r) => a + (r.serverUsPerOp ?? 0) * r.latency.count, 0) / count;
    console.log(`  overall mutations/s (create+sleep+wake requests / their wall time): ${fmt(mutationsPerSec, 0)}; server event loop ${fmt(serverUsPerMutation, 0)} us CPU per mutation incl. convergence`);
    return { idempotency, rows, mutationsPerSec, serverUsPerMutation };
  } finally {
    admin.close();
    await Promise.all(workers.map((w) => w.stop()));
    await server.stop();
  }
}

function report(results: RunResult[]): string {
  const out: string[] = [];
  for (const r of results) {
    out.push(
      `Idempotency-Key on every mutation: ${r.idempotency ? 'yes' : 'no'}; overall ${fmt(r.mutationsPerSec, 0)} mutations/s (target 5,000); server event loop ${fmt(r.serverUsPerMutation, 0)} µs CPU per mutation incl. convergence; load generator: ${CLIENTS} process(es), ${CLIENT === 'raw' ? 'lean keep-alive client (lib/raw-http.ts)' : "node:http's Agent"}\n`,
    );
    out.push(
      markdownTable(
        ['op', 'count', 'ops/s', 'p50 ms', 'p99 ms', 'max ms', 'errors', 'server CPU (cores)', 'load-gen CPU (cores)', 'all converged after', 'event-loop CPU µs/op incl. convergence'],
        r.rows.map((x) => [
          x.op,
          String(x.latency.count),
          fmt(x.opsPerSec, 0),
          fmt(x.latency.p50, 2),
          fmt(x.latency.p99, 2),
          fmt(x.latency.max, 1),
          String(x.errors),
          fmt(x.serverCores, 2),
          fmt(x.clientCores, 2),
          x.convergeMs === undefined ? '-' : `${fmt(x.convergeMs / 1000, 1)} s`,
          x.serverUsPerOp === undefined ? '-' : fmt(x.serverUsPerOp, 0),
        ]),
      ),
    );
    out.push('');
  }
  return out.join('\n');
}

/**
 * With --runs N, the spread of the overall figure per mode, and the run with
 * the median one (the box's speed moves by a third within minutes: one run
 * says little).
 */
function spread(results: readonly RunResult[]): { md: string; median: RunResult[] } {
  const lines: string[] = [];
  const median: RunResult[] = [];
  for (const idem of [false, true]) {
    const runs = results.filter((r) => r.idempotency === idem).sort((a, b) => a.mutationsPerSec - b.mutationsPerSec);
    if (runs.length === 0) continue;
    const mid = runs[Math.floor(runs.length / 2)]!;
    median.push(mid);
    const all = runs.map((r) => fmt(r.mutationsPerSec, 0)).join(', ');
    lines.push(`- Idempotency-Key ${idem ? 'on every mutation' : 'off'}: ${runs.length} runs, overall ${all} mutations/s; median ${fmt(mid.mutationsPerSec, 0)} (its tables below)`);
  }
  return { md: `${lines.join('\n')}\n\n`, median };
}

async function main(): Promise<void> {
  const modes = IDEM === 'both' ? [false, true] : [IDEM === 'on'];
  const results: RunResult[] = [];
  // Modes alternate run by run, so a slow spell of the box falls on both.
  for (let run = 0; run < RUNS; run++) for (const idem of modes) results.push(await runOnce(idem));
  const { md: head, median } = RUNS > 1 ? spread(results) : { md: '', median: results };
  const md = head + report(median);
  console.log(`\n${md}`);
  writeResults('lifecycle', { machines: M, concurrency: C, clients: CLIENTS, client: CLIENT, simLatencyMs: SIM_LATENCY, runs: RUNS, results }, md);
}

runBenchmark(main);
