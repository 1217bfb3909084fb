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
 *   [--targets hangar,bare] [--per-client 9500] [--cpu-prof DIR] [--report saved.json]
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { flag, listOption, numberOption, option } from '../lib/args.js';
import { cpuMs, rssKiB } from '../lib/proc.js';
import { Worker } from '../lib/rpc.js';
import { REPO_ROOT } from '../lib/server.js';
import { concat, fmt, markdownTable, summarize, type Summary } from '../lib/stats.js';
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

interface CaseResult {
  readonly target: string;
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
  const opts: TargetOptions = {
    simLatencyMs: SIM_LATENCY,
    env: {},
    nodeArgs: PROF_DIR === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${PROF_DIR}`],
  };
  console.log(`\n== ${targetName} scenario ${scenario}: ${n} watchers on ${topics} topic(s)`);
  const setup0 = performance.now();
  const target: Target = targetName === 'hangar' ? await startHangarTarget(topics, opts) : await startBareTarget(topics, opts);
  const clients: Worker[] = [];
  try {
    console.log(`  setup ${fmt((performance.now() - setup0) / 1000, 1)} s`);
    // Warm-up (JIT) of the change path before anyone watches; not measured.
    for (let j = 0; j < 20; j++) await target.change(j % topics);
    await target.settle();
    const rssIdleKiB = rssKiB(target.pid);
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
        });
      }),
    );
    const connected = connects.reduce((a, r) => a + r.connected, 0);
    const connectMs = Math.max(...connects.map((r) => r.ms));
    for (const r of connects) for (const f of r.failures) console.error(`  connect failure: ${f}`);
    console.log(`  connected ${connected}/${n} in ${fmt(connectMs / 1000, 2)} s`);
    await sleep(1000);
    const rssConnectedKiB = rssKiB(target.pid);

    // Changes at a fixed rate (bounded in flight), round-robin over the topics.
    const rate = scenario === 'a' ? A_RATE : B_RATE;
    const total = Math.max(1, Math.round(rate * DURATION_S));
    const expected: number[][] = Array.from({ length: topics }, () => []);
    const cpu0 = cpuMs(target.pid);
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
    const usedCpuMs = cpuMs(target.pid) - cpu0;
    const rssAfterKiB = rssKiB(target.pid);
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
      target: targetName,
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
  for (const h of results.filter((r) => r.target === 'hangar')) {
    const b = results.find((r) => r.target === 'bare' && r.scenario === h.scenario && r.watchers === h.watchers);
    if (b === undefined) continue;
    ratios.push(
      `- (${h.scenario}) N=${h.watchers}: p99 ${fmt(h.latency.p99, 1)} vs ${fmt(b.latency.p99, 1)} ms = ${fmt(h.latency.p99 / Math.max(b.latency.p99, 1), 2)}x (target <= 1.25x); ` +
        `RSS/watcher ${fmt(h.rssPerWatcherKiB, 2)} vs ${fmt(b.rssPerWatcherKiB, 2)} KiB; CPU/event ${fmt(h.cpuUsPerEvent, 2)} vs ${fmt(b.cpuUsPerEvent, 2)} us`,
    );
  }
  return `${table}\n\nHangar vs bare:\n${ratios.join('\n')}\n`;
}

async function main(): Promise<void> {
  const saved = option('report');
  if (saved !== undefined) {
    // Re-renders the tables of a saved run: --report bench/results/watch-<stamp>.json
    console.log(report((JSON.parse(readFileSync(saved, 'utf8')) as { results: CaseResult[] }).results));
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
  const dir = join(REPO_ROOT, 'bench/results');
  mkdirSync(dir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  writeFileSync(join(dir, `watch-${stamp}.json`), JSON.stringify({ aRate: A_RATE, bRate: B_RATE, durationS: DURATION_S, results }, null, 2));
  writeFileSync(join(dir, `watch-${stamp}.md`), md);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
