/**
 * The physical reference for the watch benchmark: a bare node:http SSE
 * broadcaster. It keeps the open responses of each topic in a Set and, on a
 * trigger, builds one frame (shaped and sized like Hangar's status frame, with
 * the trigger time in `status.last_progress_at`) and writes it to all of them.
 * Run as its own process: node dist/bench/watch/bare-broadcaster.js <port>
 *   GET  /topics/<i>/stream   SSE: retry frame, the current state, then every change
 *   POST /topics/<i>/change   one change; answers {"revision": "<n>"}
 */
import { createServer, type ServerResponse } from 'node:http';

const SSE_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache',
  'x-accel-buffering': 'no',
  connection: 'keep-alive',
};
const RETRY = Buffer.from('retry: 1000\n\n');

interface Topic {
  revision: number;
  frame: Buffer;
  readonly subscribers: Set<ServerResponse>;
}

const topics = new Map<number, Topic>();
let revision = 0;

function frameOf(topic: number, rev: number, now: number): Buffer {
  const iso = new Date(now).toISOString();
  const body = JSON.stringify({
    machine_id: `dm-00000000-0000-7000-8000-${String(topic).padStart(12, '0')}`,
    vcpu: 1,
    memory_mib: 1024,
    storage_gib: 10,
    autosleep_seconds: 1000 + rev,
    desired_state: 'running',
    status: { phase: 'placement_pending', reason: 'NoReadyHosts', retryable: true, revision: String(rev), last_transition_at: iso, last_progress_at: iso },
  });
  return Buffer.from(`event: status\nid: ${rev}\ndata: ${body}\n\n`);
}

function topicOf(i: number): Topic {
  let t = topics.get(i);
  if (t === undefined) {
    const rev = ++revision;
    t = { revision: rev, frame: frameOf(i, rev, Date.now()), subscribers: new Set() };
    topics.set(i, t);
  }
  return t;
}

const server = createServer((req, res) => {
  const m = /^\/topics\/(\d+)\/(stream|change)$/.exec(req.url ?? '');
  if (m === null) {
    res.writeHead(req.url === '/healthz' ? 200 : 404).end();
    return;
  }
  const t = topicOf(Number(m[1]));
  if (m[2] === 'stream') {
    res.writeHead(200, SSE_HEADERS);
    res.write(RETRY);
    res.write(t.frame);
    t.subscribers.add(res);
    res.on('close', () => t.subscribers.delete(res));
    return;
  }
  req.resume();
  req.on('end', () => {
    const rev = ++revision;
    t.revision = rev;
    t.frame = frameOf(Number(m[1]), rev, Date.now());
    for (const sub of t.subscribers) sub.write(t.frame);
    res.writeHead(200, { 'content-type': 'application/json' }).end(`{"revision":"${rev}"}`);
  });
});
server.keepAliveTimeout = 60_000;
server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => {
  const addr = server.address();
  process.send?.({ port: typeof addr === 'object' && addr !== null ? addr.port : 0 });
});
process.on('SIGTERM', () => process.exit(0));
process.on('disconnect', () => process.exit(0));
