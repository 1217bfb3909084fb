/**
 * Watch benchmark: Hangar's status stream side by side with a bare node:http
 * SSE broadcaster (bare-broadcaster.ts). Scenarios:
 *   (a) N watchers of one machine;
 *   (b) N machines with one watcher each, changes spread round-robin.
 * For each: connect time, commit -> delivery latency (from the commit time
 * each frame carries), server RSS per watcher, server CPU per delivered
 * event, and missing events per watcher (must be 0).
 * Usage: node dist/bench/watch/run.js [--quick] [--a-sizes 1000,5000,10000,19000]
 *   [--b-sizes 1000,5000] [--a-rate 4] [--b-rate 200] [--duration 10]
 *   [--targets hangar,bare] [--per-client 9500] [--cpu-prof DIR] [--report saved.json[,more.json]]
 *   [--store sqlite|postgres] [--replicas 2] [--database-url postgres://postgres@127.0.0.1:5432/test]
 *   [--change-connections 32]  (1: every change made on one replica)
 * With --store postgres (or target `hangar-pg`), each Hangar case runs `serve --replicas N` on a fresh
 * database hangar_bench_<random> created on that server (dropped afterwards); RSS and CPU are summed over
 * the replica workers.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { flag, listOption, numberOption, option } from '../lib/args.js';
import { DEFAULT_PG_URL } from '../lib/pg.js';
import { cpuMs, openFds, rssKiB, sumCpuMs, sumRssKiB } from '../lib/proc.js';
import { Worker } from '../lib/rpc.js';
import { REPO_ROOT } from '../lib/server.js';
import { concat, fmt, markdownTable, summarize, type Summary } from '../lib/stats.js';
import { runBenchmark, writeResults } from '../lib/results.js';
import { forEachLimit, sleep, waitUntil } from '../lib/util.js';
import { startBareTarget, startHangarTarget, type Target, type TargetOptions } from './targets.js';
import type { ConnectResult, FinishResult } from './watcher-client.js';

const quick = flag('quick');
const A_SIZES = listOption('a-sizes', quick ? [200, 1000] : [1000, 5000, 10000, 19000]);
const B_SIZES = listOption('b-sizes', quick ? [200] : [1000, 5000]);
const A_RATE = numberOption('a-rate', 4);
const B_RATE = numberOption('b-rate', 200);
const DURATION_S = numberOption('duration', quick ? 3 : 10);
const PER_CLIENT = numberOption('per-client', 9500);
const TARGETS = (option('targets') ?? 'hangar,bare').split(',');
const PROF_DIR = option('cpu-prof');
const DRAIN_TIMEOUT_MS = numberOption('drain-timeout-ms', 15_000);
const CONNECT_TIMEOUT_MS = numberOption('connect-timeout-ms', 120_000);
const SIM_LATENCY = numberOption('sim-latency-ms', 1);
const STORE = option('store') ?? 'sqlite';
if (STORE !== 'sqlite' && STORE !== 'postgres') throw new Error(`--store: "${STORE}" must be sqlite or postgres`);
const REPLICAS = numberOption('replicas', STORE === 'postgres' ? 2 : 1);
if (REPLICAS > 1 && STORE !== 'postgres') throw new Error('--replicas needs --store postgres');
const DATABASE_URL = option('database-url') ?? DEFAULT_PG_URL;
/** Keep-alive connections for the changes (Hangar); 1 pins every change to one replica. */
const CHANGE_CONNECTIONS = numberOption('change-connections', 32);
/** Above this many watchers, client process c connects from 127.0.0.<2+c>: one source address has only ~28k ephemeral ports towards 127.0.0.1:<port>. */
const SPREAD_SOURCE_ABOVE = 20_000;

interface ProcessShare {
  readonly pid: number;
  /** Open file descriptors with all watchers connected (watchers on this process + ~50). */
  readonly fds: number;
  readonly rssIdleKiB: number;
  readonly rssConnectedKiB: number;
  readonly rssAfterKiB: number;
  readonly cpuMs: number;
}

interface CaseResult {
  readonly target: string;
  readonly store?: 'sqlite' | 'postgres';
  /** Serving processes measured (Hangar replicas); RSS and CPU below are their sums. */
  readonly processes?: number;
  readonly perProcess?: ProcessShare[];
  /** CPU of the cluster primary during the change phase (not included in cpuMs). */
  readonly primaryCpuMs?: number;
  readonly scenario: 'a' | 'b';
  readonly watchers: number;
  readonly topics: number;
  readonly connected: number;
  readonly connectMs: number;
  readonly changes: number;
  readonly achievedRate: number;
  readonly delivered: number;
  readonly expected: number;
  readonly latency: Summary;
  readonly rssIdleKiB: number;
  readonly rssConnectedKiB: number;
  readonly rssAfterKiB: number;
  readonly rssPerWatcherKiB: number;
  readonly cpuMs: number;
  readonly cpuUsPerEvent: number;
  readonly missing: number;
  readonly extra: number;
  readonly outOfOrder: number;
  readonly watchersMissing: number;
  readonly closedEarly: number;
  readonly closeReasons: Record<string, number>;
}

async function runCase(targetName: string, scenario: 'a' | 'b', n: number): Promise<CaseResult> {
  const topics = scenario === 'a' ? 1 : n;
  const pgMode = targetName === 'hangar-pg' || (targetName === 'hangar' && STORE === 'postgres');
  const opts: TargetOptions = {
    simLatencyMs: SIM_LATENCY,
    env: {},
    nodeArgs: PROF_DIR === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${PROF_DIR}`],
    changeConnections: CHANGE_CONNECTIONS,
    ...(pgMode ? { store: 'postgres' as const, replicas: Math.max(REPLICAS, 1), databaseUrl: DATABASE_URL } : {}),
  };
  console.log(`\n== ${targetName} scenario ${scenario}: ${n} watchers on ${topics} topic(s)`);
  const setup0 = performance.now();
  const target: Target = targetName.startsWith('hangar') ? await startHangarTarget(topics, opts) : await startBareTarget(topics, opts);
  const clients: Worker[] = [];
  try {
    const pids = target.servingPids();
    const multi = pids.length > 1 || pids[0] !== target.pid;
    console.log(`  setup ${fmt((performance.now() - setup0) / 1000, 1)} s${multi ? `; serving processes ${pids.join(', ')} (primary ${target.pid})` : ''}`);
    // Warm-up (JIT) of the change path before anyone watches; not measured.
    for (let j = 0; j < 20; j++) await target.change(j % topics);
    await target.settle();
    const idleEach = pids.map((p) => rssKiB(p));
    const rssIdleKiB = sumRssKiB(pids);
    const nClients = Math.max(1, Math.ceil(n / PER_CLIENT));
    for (let c = 0; c < nClients; c++) clients.push(new Worker(join(REPO_ROOT, 'dist/bench/watch/watcher-client.js')));
    // Watcher k watches topic k % topics; client c gets watchers c, c + nClients, ...
    const connects = await Promise.all(
      clients.map((w, c) => {
        const mine: number[] = [];
        for (let k = c; k < n; k += nClients) mine.push(k % topics);
        return w.call<ConnectResult>('connect', {
          port: target.port,
          paths: target.paths,
          topicOf: Int32Array.from(mine),
          authorization: target.authorization,
          concurrency: 128,
          timeoutMs: CONNECT_TIMEOUT_MS,
          ...(n > SPREAD_SOURCE_ABOVE ? { localAddress: `127.0.0.${2 + c}` } : {}),
        });
      }),
    );
    const connected = connects.reduce((a, r) => a + r.connected, 0);
    const connectMs = Math.max(...connects.map((r) => r.ms));
    for (const r of connects) for (const f of r.failures) console.error(`  connect failure: ${f}`);
    console.log(`  connected ${connected}/${n} in ${fmt(connectMs / 1000, 2)} s`);
    await sleep(1000);
    const connectedEach = pids.map((p) => rssKiB(p));
    const fdsEach = pids.map((p) => openFds(p));
    const rssConnectedKiB = sumRssKiB(pids);
    if (target.heap !== undefined) console.log(`  connected: RSS ${fmt(rssConnectedKiB / 1024)} MiB, ${await target.heap()}`);
    if (multi) console.log(`  per process: ${pids.map((p, i) => `pid ${p}: ${fdsEach[i]} fds, RSS ${fmt(idleEach[i]! / 1024)} -> ${fmt(connectedEach[i]! / 1024)} MiB`).join('; ')}`);

    // Changes at a fixed rate (bounded in flight), round-robin over the topics.
    const rate = scenario === 'a' ? A_RATE : B_RATE;
    const total = Math.max(1, Math.round(rate * DURATION_S));
    const expected: number[][] = Array.from({ length: topics }, () => []);
    const cpu0Each = pids.map((p) => cpuMs(p));
    const cpu0 = cpu0Each.reduce((a, b) => a + b, 0);
    const primaryCpu0 = multi ? cpuMs(target.pid) : 0;
    const t0 = performance.now();
    let inFlight = 0;
    let failures = 0;
    const pending: Promise<void>[] = [];
    for (let j = 0; j < total; j++) {
      const due = t0 + (j * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 1) await sleep(wait);
      while (inFlight >= 64) await sleep(1);
      inFlight++;
      const topic = j % topics;
      pending.push(
        target.change(topic).then(
          (rev) => {
            expected[topic]!.push(rev);
            inFlight--;
          },
          (err: unknown) => {
            failures++;
            inFlight--;
            if (failures <= 3) console.error(`  change failed: ${String(err)}`);
          },
        ),
      );
    }
    await Promise.all(pending);
    const driveMs = performance.now() - t0;
    if (target.heap !== undefined) console.log(`  changes done: ${await target.heap()}`);
    for (const e of expected) e.sort((x, y) => x - y);
    // Drained: the reconciler is idle and no frame arrived for 500 ms.
    await target.settle();
    let last = -1;
    let quietSince = performance.now();
    await waitUntil(
      'deliveries to stop',
      async () => {
        const now = (await Promise.all(clients.map((w) => w.call<number>('delivered', null)))).reduce((a, b) => a + b, 0);
        if (now !== last) {
          last = now;
          quietSince = performance.now();
        }
        return performance.now() - quietSince >= 500;
      },
      DRAIN_TIMEOUT_MS + 120_000,
      50,
    );
    const usedCpuMs = sumCpuMs(pids) - cpu0;
    const primaryCpuMs = multi ? cpuMs(target.pid) - primaryCpu0 : undefined;
    const afterEach = pids.map((p) => rssKiB(p));
    const rssAfterKiB = afterEach.reduce((a, b) => a + b, 0);
    if (target.heap !== undefined) console.log(`  after changes: RSS ${fmt(rssAfterKiB / 1024)} MiB, ${await target.heap()}`);
    const perProcess: ProcessShare[] = pids.map((pid, i) => ({
      pid,
      fds: fdsEach[i]!,
      rssIdleKiB: idleEach[i]!,
      rssConnectedKiB: connectedEach[i]!,
      rssAfterKiB: afterEach[i]!,
      cpuMs: cpuMs(pid) - cpu0Each[i]!,
    }));
    // What each watcher must see: the system's own record of every commit (Hangar: its event log), which must include every change we made.
    let notInLog = 0;
    const histories: number[][] = new Array<number[]>(topics);
    await forEachLimit(topics, 16, async (i) => {
      const h = await target.history(i);
      if (h === undefined) {
        histories[i] = expected[i]!;
        return;
      }
      const set = new Set(h);
      for (const r of expected[i]!) if (!set.has(r)) notInLog++;
      histories[i] = h;
    });
    if (notInLog > 0) console.error(`  ${notInLog} changes we made are not in the event log`);
    const expectedTotal = histories.reduce((a, e, i) => a + e.filter((r) => r >= (expected[i]![0] ?? Infinity)).length, 0) * (n / topics);
    const fin = await Promise.all(clients.map((w) => w.call<FinishResult>('finish', { expected: histories })));
    const delivered = fin.reduce((a, r) => a + r.delivered, 0);
    const closeReasons: Record<string, number> = {};
    for (const r of fin) for (const [k, v] of Object.entries(r.closeReasons)) closeReasons[k] = (closeReasons[k] ?? 0) + v;
    const result: CaseResult = {
      target: target.name,
      store: pgMode ? 'postgres' : targetName === 'bare' ? undefined : 'sqlite',
      processes: pids.length,
      perProcess,
      ...(primaryCpuMs !== undefined ? { primaryCpuMs } : {}),
      scenario,
      watchers: n,
      topics,
      connected,
      connectMs,
      changes: total - failures,
      achievedRate: ((total - failures) / driveMs) * 1000,
      delivered,
      expected: expectedTotal,
      latency: summarize(concat(fin.map((r) => r.latencies))),
      rssIdleKiB,
      rssConnectedKiB,
      rssAfterKiB,
      rssPerWatcherKiB: (Math.max(rssConnectedKiB, rssAfterKiB) - rssIdleKiB) / n,
      cpuMs: usedCpuMs,
      cpuUsPerEvent: delivered > 0 ? (usedCpuMs * 1000) / delivered : Number.NaN,
      missing: fin.reduce((a, r) => a + r.missing, 0),
      extra: fin.reduce((a, r) => a + r.extra, 0),
      outOfOrder: fin.reduce((a, r) => a + r.outOfOrder, 0),
      watchersMissing: fin.reduce((a, r) => a + r.watchersMissing, 0),
      closedEarly: fin.reduce((a, r) => a + r.closedEarly, 0),
      closeReasons,
    };
    console.log(
      `  ${result.changes} changes at ${fmt(result.achievedRate, 1)}/s; delivered ${delivered}/${expectedTotal}; latency p50 ${fmt(result.latency.p50, 1)} ms p99 ${fmt(result.latency.p99, 1)} ms max ${fmt(result.latency.max, 0)} ms; ` +
        `RSS ${fmt(rssIdleKiB / 1024)} -> ${fmt(rssConnectedKiB / 1024)} -> ${fmt(rssAfterKiB / 1024)} MiB (${fmt(result.rssPerWatcherKiB, 2)} KiB/watcher); ` +
        `CPU ${fmt(usedCpuMs, 0)} ms (${fmt(result.cpuUsPerEvent, 2)} us/event); missing ${result.missing} extra ${result.extra} out-of-order ${result.outOfOrder} closed ${result.closedEarly}`,
    );
    if (multi) {
      console.log(
        `  per process: ${perProcess.map((q) => `pid ${q.pid}: ${q.fds} fds, RSS ${fmt(q.rssIdleKiB / 1024)} -> ${fmt(q.rssConnectedKiB / 1024)} -> ${fmt(q.rssAfterKiB / 1024)} MiB, CPU ${fmt(q.cpuMs, 0)} ms`).join('; ')}; primary CPU ${fmt(primaryCpuMs ?? 0, 0)} ms`,
      );
    }
    return result;
  } finally {
    await Promise.all(clients.map((w) => w.stop()));
    await target.stop();
  }
}

function report(results: readonly CaseResult[]): string {
  const rows = results.map((r) => [
    r.scenario === 'a' ? `(a) ${r.watchers} watchers, 1 machine` : `(b) ${r.topics} machines x 1 watcher`,
    r.target,
    `${r.connected}/${r.watchers}`,
    `${fmt(r.connectMs / 1000, 2)} s`,
    `${r.changes} @ ${fmt(r.achievedRate, 1)}/s`,
    `${r.delivered}/${r.expected}`,
    fmt(r.latency.p50, 1),
    fmt(r.latency.p99, 1),
    fmt(r.latency.max, 0),
    fmt((r.rssConnectedKiB - r.rssIdleKiB) / r.watchers, 2),
    fmt(r.rssPerWatcherKiB, 2),
    fmt(r.rssAfterKiB / 1024, 0),
    fmt(r.cpuUsPerEvent, 2),
    `${r.missing} (${r.watchersMissing} watchers)`,
    String(r.closedEarly),
  ]);
  const table = markdownTable(
    ['scenario', 'target', 'connected', 'connect all', 'changes', 'delivered', 'p50 ms', 'p99 ms', 'max ms', 'RSS KiB/watcher connected', 'RSS KiB/watcher peak', 'RSS MiB after', 'CPU us/event', 'missing', 'closed early'],
    rows,
  );
  const ratios: string[] = [];
  for (const h of results.filter((r) => r.target.startsWith('hangar'))) {
    // The bare broadcaster at the same N, or (N beyond one process, e.g. replicas) the largest N it ran.
    let b = results.find((r) => r.target === 'bare' && r.scenario === h.scenario && r.watchers === h.watchers);
    let note = '';
    if (b === undefined) {
      const same = results.filter((r) => r.target === 'bare' && r.scenario === h.scenario).sort((x, y) => y.watchers - x.watchers);
      b = same[0];
      if (b !== undefined) note = ` (bare at N=${b.watchers}, one process)`;
    }
    if (b === undefined) continue;
    ratios.push(
      `- ${h.target} (${h.scenario}) N=${h.watchers}: p99 ${fmt(h.latency.p99, 1)} vs ${fmt(b.latency.p99, 1)} ms${note} = ${fmt(h.latency.p99 / Math.max(b.latency.p99, 1), 2)}x (target <= 1.25x); ` +
        `RSS/watcher ${fmt(h.rssPerWatcherKiB, 2)} vs ${fmt(b.rssPerWatcherKiB, 2)} KiB; CPU/event ${fmt(h.cpuUsPerEvent, 2)} vs ${fmt(b.cpuUsPerEvent, 2)} us`,
    );
  }
  const shares: string[] = [];
  for (const r of results) {
    if ((r.processes ?? 1) <= 1 || r.perProcess === undefined) continue;
    shares.push(
      `- ${r.target} (${r.scenario}) N=${r.watchers}: ${r.perProcess.map((q, i) => `replica ${i}: ${q.fds} fds, RSS ${fmt(q.rssIdleKiB / 1024, 0)} -> ${fmt(q.rssConnectedKiB / 1024, 0)} -> ${fmt(q.rssAfterKiB / 1024, 0)} MiB, CPU ${fmt(q.cpuMs / 1000, 1)} s`).join('; ')}; primary CPU ${fmt((r.primaryCpuMs ?? 0) / 1000, 2)} s`,
    );
  }
  return `${table}\n\nHangar vs bare:\n${ratios.join('\n')}\n${shares.length > 0 ? `\nPer replica (fds = watchers on it + ~50; RSS idle -> connected -> after changes):\n${shares.join('\n')}\n` : ''}`;
}

async function main(): Promise<void> {
  const saved = option('report');
  if (saved !== undefined) {
    // Re-renders the tables of a saved run: --report bench/results/watch-<stamp>.json
    // Several files (comma-separated) are rendered as one table, in the order given.
    console.log(report(saved.split(',').flatMap((f) => (JSON.parse(readFileSync(f.trim(), 'utf8')) as { results: CaseResult[] }).results)));
    return;
  }
  const results: CaseResult[] = [];
  const cases: ['a' | 'b', number][] = [...A_SIZES.map((n) => ['a', n] as ['a', number]), ...B_SIZES.map((n) => ['b', n] as ['b', number])];
  for (const [scenario, n] of cases) {
    for (const t of TARGETS) {
      try {
        results.push(await runCase(t, scenario, n));
      } catch (err) {
        console.error(`  ${t} ${scenario} N=${n} failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  }
  const md = report(results);
  console.log(`\n${md}`);
  writeResults('watch', { aRate: A_RATE, bRate: B_RATE, durationS: DURATION_S, store: STORE, replicas: REPLICAS, changeConnections: CHANGE_CONNECTIONS, perClient: PER_CLIENT, results }, md);
}

runBenchmark(main);
