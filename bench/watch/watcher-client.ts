/**
 * Watcher process for the watch benchmark: opens many SSE connections
 * (raw sockets), records for each `status` frame the delay from the commit
 * time the frame carries (`status.last_progress_at`) to its arrival, and at
 * the end checks each watcher's revisions against the changes actually made.
 */
import { serveRpc } from '../lib/rpc.js';
import { SseConnection, type SseEvent } from '../lib/sse-client.js';

export interface ConnectParams {
  readonly port: number;
  /** Stream paths; watcher k watches `paths[topicOf[k]]`. */
  readonly paths: readonly string[];
  readonly topicOf: Int32Array;
  readonly authorization: string | undefined;
  readonly concurrency: number;
  readonly timeoutMs: number;
  /** Source address (127.0.0.x) of this process's connections; default: the kernel's choice (127.0.0.1). */
  readonly localAddress?: string;
}

export interface ConnectResult {
  readonly connected: number;
  readonly failed: number;
  readonly ms: number;
  readonly failures: string[];
}

export interface FinishResult {
  readonly latencies: Float64Array;
  readonly delivered: number;
  readonly missing: number;
  readonly extra: number;
  readonly outOfOrder: number;
  readonly watchersMissing: number;
  readonly closedEarly: number;
  readonly bookmarks: number;
  readonly closeReasons: Record<string, number>;
}

const MARK = '"last_progress_at":"';

interface Watcher {
  conn: SseConnection | null;
  topic: number;
  initial: number;
  revisions: number[];
  closed: string | null;
}

let watchers: Watcher[] = [];
let latencies: number[] = [];
let delivered = 0;
let bookmarks = 0;

function commitTime(data: string): number {
  const at = data.indexOf(MARK);
  if (at < 0) return Number.NaN;
  return Date.parse(data.slice(at + MARK.length, data.indexOf('"', at + MARK.length)));
}

async function connectAll(p: ConnectParams): Promise<ConnectResult> {
  const t0 = performance.now();
  const failures: string[] = [];
  let failed = 0;
  let next = 0;
  let connected = 0;
  watchers = [];
  latencies = [];
  delivered = 0;
  bookmarks = 0;
  const n = p.topicOf.length;
  await new Promise<void>((done) => {
    let inFlight = 0;
    const timer = setTimeout(() => done(), p.timeoutMs);
    const settle = () => {
      inFlight--;
      if (connected + failed === n) {
        clearTimeout(timer);
        done();
      } else pump();
    };
    const pump = () => {
      while (inFlight < p.concurrency && next < n) {
        const k = next++;
        inFlight++;
        const w: Watcher = { conn: null, topic: p.topicOf[k]!, initial: -1, revisions: [], closed: null };
        watchers.push(w);
        let settled = false;
        const request = `GET ${p.paths[w.topic]} HTTP/1.1\r\nHost: 127.0.0.1:${p.port}\r\nAccept: text/event-stream\r\n${p.authorization === undefined ? '' : `Authorization: ${p.authorization}\r\n`}\r\n`;
        w.conn = new SseConnection(p.port, request, {
          onHead: (status) => {
            if (status !== 200 && !settled) {
              settled = true;
              failed++;
              if (failures.length < 5) failures.push(`HTTP ${status}`);
              settle();
            }
          },
          onEvent: (e: SseEvent) => {
            if (e.event === 'bookmark') {
              bookmarks++;
              return;
            }
            if (e.event !== 'status') return;
            const rev = Number(e.id);
            if (w.initial < 0) {
              w.initial = rev;
              if (!settled) {
                settled = true;
                connected++;
                settle();
              }
              return;
            }
            const now = Date.now();
            delivered++;
            w.revisions.push(rev);
            latencies.push(now - commitTime(e.data));
          },
          onClose: (_hadError, why) => {
            w.closed = why;
            if (!settled) {
              settled = true;
              failed++;
              if (failures.length < 5) failures.push(why);
              settle();
            }
          },
        }, p.localAddress);
      }
    };
    pump();
  });
  return { connected, failed, ms: performance.now() - t0, failures };
}

function finish(expected: readonly (readonly number[])[]): FinishResult {
  let missing = 0;
  let extra = 0;
  let outOfOrder = 0;
  let watchersMissing = 0;
  let closedEarly = 0;
  const closeReasons: Record<string, number> = {};
  for (const w of watchers) {
    if (w.closed !== null) {
      closedEarly++;
      closeReasons[w.closed] = (closeReasons[w.closed] ?? 0) + 1;
    }
    const want = (expected[w.topic] ?? []).filter((r) => r > w.initial);
    const got = new Set(w.revisions);
    let miss = 0;
    for (const r of want) if (!got.has(r)) miss++;
    const wantSet = new Set(want);
    for (const r of w.revisions) if (!wantSet.has(r)) extra++;
    for (let i = 1; i < w.revisions.length; i++) if (w.revisions[i]! <= w.revisions[i - 1]!) outOfOrder++;
    missing += miss;
    if (miss > 0) watchersMissing++;
    w.conn?.close();
  }
  const result: FinishResult = { latencies: Float64Array.from(latencies), delivered, missing, extra, outOfOrder, watchersMissing, closedEarly, bookmarks, closeReasons };
  watchers = [];
  latencies = [];
  return result;
}

serveRpc({
  connect: (p: ConnectParams) => connectAll(p),
  delivered: () => delivered,
  finish: (p: { expected: number[][] }) => finish(p.expected),
});
