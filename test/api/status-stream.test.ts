/**
 * GET /v1/machines/{id}/status/stream over real HTTP, read with a real SSE
 * parser: every committed change, in order, exactly once, across reconnects.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api } from '../helpers/http.js';
import type { TestServer } from '../helpers/server.js';
import { startTestServer } from '../helpers/server.js';
import { openStream, statusFrames } from '../helpers/sse.js';
import { createApiKey } from '../../src/api/api-keys.js';

let server: TestServer;
let api: Api;

beforeAll(async () => {
  server = await startTestServer({ env: { SIM_LATENCY_MS: '5', BOOKMARK_INTERVAL_MS: '200' } });
  api = new Api(server.url, server.adminKey);
});
afterAll(() => server.close());

const streamUrl = (id: string) => `${server.url}/v1/machines/${id}/status/stream`;

/** The machine's whole event log, as revisions. */
async function logRevisions(id: string): Promise<number[]> {
  return (await server.hangar.store.readMachineEvents(id, 0, 10_000)).map((e) => e.revision);
}

/** A raw HTTP/1.x connection, to see the bytes on the wire (chunk framing, keep-alive). */
async function rawHttp() {
  const net = await import('node:net');
  const socket = net.connect(Number(new URL(server.url).port), '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  let buf = '';
  let closed = false;
  const waiters: (() => void)[] = [];
  const wake = () => waiters.splice(0).forEach((w) => w());
  socket.setEncoding('latin1');
  socket.on('data', (d: string) => {
    buf += d;
    wake();
  });
  socket.on('close', () => {
    closed = true;
    wake();
  });
  const more = () => new Promise<void>((resolve) => (closed ? resolve() : waiters.push(resolve)));
  return {
    send: (text: string) => socket.write(text),
    close: () => socket.destroy(),
    async untilClosed(): Promise<string> {
      while (!closed) await more();
      return buf;
    },
    /** One chunked or content-length response, taken off the connection; its body decoded. */
    async response(): Promise<{ head: string; body: string }> {
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end >= 0) {
          const head = buf.slice(0, end);
          let at = end + 4;
          const length = /content-length: (\d+)/i.exec(head);
          if (length !== null) {
            const n = Number(length[1]);
            if (buf.length >= at + n) {
              buf = buf.slice(at + n);
              return { head, body: '' };
            }
          } else {
            let body = '';
            for (;;) {
              const lineEnd = buf.indexOf('\r\n', at);
              if (lineEnd < 0) break;
              const size = parseInt(buf.slice(at, lineEnd), 16);
              if (buf.length < lineEnd + 2 + size + 2) break;
              expect(buf.slice(lineEnd + 2 + size, lineEnd + 4 + size)).toBe('\r\n');
              if (size === 0) {
                buf = buf.slice(lineEnd + 4);
                return { head, body };
              }
              body += buf.slice(lineEnd + 2, lineEnd + 2 + size);
              at = lineEnd + 4 + size;
            }
          }
        }
        if (closed) throw new Error(`connection closed mid-response: ${JSON.stringify(buf.slice(0, 200))}`);
        await more();
      }
    },
  };
}

describe('status stream', () => {
  it('starts with retry and SSE headers, and shows every phase of a create, then ends', async () => {
    const { body } = await api.createMachine();
    const id = body.machine_id as string;
    const stream = await openStream(streamUrl(id), server.adminKey);
    expect(stream.status).toBe(200);
    expect(stream.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(stream.headers.get('cache-control')).toBe('no-cache');
    expect(stream.headers.get('x-accel-buffering')).toBe('no');
    expect(await stream.ended).toBe('end');
    expect(stream.retry()).toBe(1000);
    const frames = statusFrames(stream.frames);
    const phases = frames.map((f) => f.body.status.phase);
    // The stream began at the current state, which may already be past `accepted`.
    expect(['accepted', 'placement_pending', 'starting', 'running']).toEqual(expect.arrayContaining(phases));
    expect(phases[phases.length - 1]).toBe('running');
    for (const f of frames) expect(f.revision).toBe(Number(f.body.status.revision));
    // Every revision from the first frame on is in the stream: nothing skipped.
    const log = await logRevisions(id);
    expect(frames.map((f) => f.revision)).toEqual(log.filter((r) => r >= frames[0]!.revision));
  });

  it('from Last-Event-ID 0 replays accepted, placement_pending, starting, running and ends', async () => {
    const { body } = await api.createMachine();
    const stream = await openStream(streamUrl(body.machine_id), server.adminKey, { 'last-event-id': '0' });
    await stream.ended;
    const frames = statusFrames(stream.frames);
    expect(frames.map((f) => f.body.status.phase)).toEqual(['accepted', 'placement_pending', 'starting', 'running']);
    expect(frames.map((f) => f.revision)).toEqual(await logRevisions(body.machine_id));
  });

  it.each([
    ['sleep', 'sleeping', ['running', 'stopping', 'sleeping']],
    ['wake', 'running', ['sleeping', 'placement_pending|starting', 'running']],
    ['delete', 'destroyed', ['running|sleeping', 'destroying', 'destroyed']],
  ])('%s: every intermediate phase, then the end', async (action, target, expected) => {
    const { body } = await api.createMachine();
    const id = body.machine_id as string;
    await api.waitForPhase(id, 'running');
    if (action === 'wake') {
      await api.post(`/v1/machines/${id}/sleep`);
      await api.waitForPhase(id, 'sleeping');
    }
    const before = (await api.get(`/v1/machines/${id}`)).body.status.revision;
    const res = action === 'delete' ? await api.delete(`/v1/machines/${id}`) : await api.post(`/v1/machines/${id}/${action}`);
    expect(res.status).toBe(202);
    const stream = await openStream(streamUrl(id), server.adminKey, { 'last-event-id': before });
    await stream.ended;
    const frames = statusFrames(stream.frames);
    const phases = frames.map((f) => f.body.status.phase);
    expect(phases[phases.length - 1]).toBe(target);
    for (const want of expected.slice(1)) expect(phases.some((p) => want.split('|').includes(p))).toBe(true);
    expect(frames.map((f) => f.revision)).toEqual((await logRevisions(id)).filter((r) => r > Number(before)));
  });

  it('a resize is pending until the runtime applied it: the stream ends on Resized, not on the request', async () => {
    const own = await startTestServer({ env: { SIM_LATENCY_MS: '300' } });
    try {
      const api2 = new Api(own.url, own.adminKey);
      const { body } = await api2.createMachine();
      await api2.waitForPhase(body.machine_id, 'running');
      const patched = await api2.patch(`/v1/machines/${body.machine_id}`, { vcpu: 2 });
      expect(patched.status).toBe(202);
      expect(patched.body.status.reason).toBe('ResizeRequested');
      const s = await openStream(`${own.url}/v1/machines/${body.machine_id}/status/stream`, own.adminKey);
      await s.ended;
      expect(statusFrames(s.frames).map((f) => f.body.status.reason)).toEqual(['ResizeRequested', 'Resized']);
    } finally {
      await own.close();
    }
  });

  it('a converged machine gives one frame and ends', async () => {
    const { body } = await api.createMachine();
    await api.waitForPhase(body.machine_id, 'running');
    const stream = await openStream(streamUrl(body.machine_id), server.adminKey);
    await stream.ended;
    expect(stream.frames.map((f) => f.event)).toEqual(['status']);
  });

  it('a stream that ended leaves its keep-alive connection usable, the chunked body well formed', async () => {
    const { body } = await api.createMachine();
    await api.waitForPhase(body.machine_id, 'running');
    const conn = await rawHttp();
    conn.send(`GET /v1/machines/${body.machine_id}/status/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${server.adminKey}\r\nLast-Event-ID: 0\r\n\r\n`);
    const stream = await conn.response();
    expect(stream.head).toMatch(/^HTTP\/1\.1 200/);
    expect(stream.head).toMatch(/transfer-encoding: chunked/i);
    expect(stream.body.match(/^event: status$/gm)).toHaveLength(4);
    expect(stream.body.startsWith('retry: 1000\n\n')).toBe(true);
    // The same connection answers the next request.
    conn.send('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    expect((await conn.response()).head).toMatch(/^HTTP\/1\.1 200/);
    conn.close();
  });

  it('an HTTP/1.0 client gets the same frames unchunked, ending with the connection', async () => {
    const { body } = await api.createMachine();
    await api.waitForPhase(body.machine_id, 'running');
    const conn = await rawHttp();
    conn.send(`GET /v1/machines/${body.machine_id}/status/stream HTTP/1.0\r\nAuthorization: Bearer ${server.adminKey}\r\nLast-Event-ID: 0\r\n\r\n`);
    const all = await conn.untilClosed();
    const [head, rest] = [all.slice(0, all.indexOf('\r\n\r\n')), all.slice(all.indexOf('\r\n\r\n') + 4)];
    expect(head).toMatch(/^HTTP\/1\.1 200/);
    expect(head).not.toMatch(/transfer-encoding/i);
    expect(rest.startsWith('retry: 1000\n\n')).toBe(true);
    expect(rest).not.toMatch(/\r\n/); // no chunk framing: SSE lines end in \n only
    const ids = [...rest.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
    expect(ids).toEqual(await logRevisions(body.machine_id));
  });

  it('Last-Event-ID at the machine\'s revision: a converged machine ends at once, with no frame', async () => {
    const { body } = await api.createMachine();
    const m = await api.waitForPhase(body.machine_id, 'running');
    const stream = await openStream(streamUrl(body.machine_id), server.adminKey, { 'last-event-id': m.status.revision });
    await stream.ended;
    expect(stream.frames).toEqual([]);
  });

  it('a bad Last-Event-ID is a 400 before the stream starts; an unknown machine a 404', async () => {
    const { body } = await api.createMachine();
    for (const bad of ['-1', 'abc', '1.5', '99999999999999999999']) {
      const s = await openStream(streamUrl(body.machine_id), server.adminKey, { 'last-event-id': bad });
      expect(s.status).toBe(400);
      expect(JSON.parse(s.errorBody!).error_code).toBe('INVALID_ARGUMENT');
    }
    const missing = await openStream(streamUrl('dm-00000000-0000-7000-8000-000000000000'), server.adminKey);
    expect(missing.status).toBe(404);
    const noKey = await fetch(streamUrl(body.machine_id));
    expect(noKey.status).toBe(401);
  });

  it('another org gets 404 before any frame', async () => {
    const { body } = await api.createMachine();
    const other = await createApiKey(server.hangar.store, { orgId: '44444444-4444-4444-8444-444444444444', scope: 'user' });
    const s = await openStream(streamUrl(body.machine_id), other.key);
    expect(s.status).toBe(404);
    expect(JSON.parse(s.errorBody!).error_code).toBe('MACHINE_NOT_FOUND');
  });

  it('resume: disconnect mid-transition, reconnect with the last id, changes committed meanwhile; union = the log', async () => {
    const { body } = await api.createMachine();
    const id = body.machine_id as string;
    await api.waitForPhase(id, 'running');
    await server.hangar.reconciler.stop();
    try {
      await api.post(`/v1/machines/${id}/sleep`);
      const first = await openStream(streamUrl(id), server.adminKey);
      await first.waitFor((f) => statusFrames(f).some((x) => x.body.desired_state === 'sleeping'));
      await api.patch(`/v1/machines/${id}`, { autosleep: '2h' });
      await first.waitFor((f) => statusFrames(f).length >= 2);
      first.close();
      const lastId = statusFrames(first.frames).at(-1)!.revision;
      // Changes committed while no one is connected.
      await api.patch(`/v1/machines/${id}`, { autosleep: '1h' });
      await server.hangar.reconciler.start();
      const second = await openStream(streamUrl(id), server.adminKey, { 'last-event-id': String(lastId) });
      // More changes while the second connection replays.
      await second.ended;
      const union = [...statusFrames(first.frames), ...statusFrames(second.frames)].map((f) => f.revision);
      const log = await logRevisions(id);
      expect(union).toEqual(log.filter((r) => r >= union[0]!));
      expect(new Set(union).size).toBe(union.length);
      expect(statusFrames(second.frames).at(-1)!.body.status.phase).toBe('sleeping');
    } finally {
      await server.hangar.reconciler.start();
    }
  });

  it('resume across many reconnects during a burst loses and repeats nothing', async () => {
    const { body } = await api.createMachine({ vcpu: 1, memory_mib: 512, storage_gib: 5, autosleep: 'never' });
    const id = body.machine_id as string;
    await api.waitForPhase(id, 'running');
    const start = Number((await api.get(`/v1/machines/${id}`)).body.status.revision);
    const burst = (async () => {
      for (let i = 0; i < 60; i++) await api.patch(`/v1/machines/${id}`, { autosleep: `${100 + i}s` });
    })();
    const seen: number[] = [];
    let last = start;
    let done = false;
    void burst.then(() => (done = true));
    while (!done || seen.length < 60) {
      const s = await openStream(streamUrl(id), server.adminKey, { 'last-event-id': String(last) });
      await s.waitFor((f) => f.length >= 1 || done, 2000).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 5));
      s.close();
      for (const f of statusFrames(s.frames)) seen.push(f.revision);
      if (seen.length > 0) last = seen[seen.length - 1]!;
      if (done && (await logRevisions(id)).filter((r) => r > start).length === seen.length) break;
    }
    await burst;
    expect(seen).toEqual((await logRevisions(id)).filter((r) => r > start));
  });

  it('200 concurrent watchers see identical sequences under a burst of 100 changes', async () => {
    await withConvergencePaused(server, async () => {
      const { body } = await api.createMachine({ vcpu: 1, memory_mib: 512, storage_gib: 5, autosleep: 'never' });
      const id = body.machine_id as string;
      const rev = body.status.revision as string;
      const streams = await Promise.all(Array.from({ length: 200 }, () => openStream(streamUrl(id), server.adminKey, { 'last-event-id': rev })));
      await Promise.all(Array.from({ length: 100 }, (_, i) => api.patch(`/v1/machines/${id}`, { autosleep: `${1000 + i}s` })));
      await Promise.all(streams.map((s) => s.waitFor((f) => statusFrames(f).length >= 100, 20_000)));
      const expected = (await logRevisions(id)).filter((r) => r > Number(rev));
      expect(expected).toHaveLength(100);
      for (const s of streams) {
        expect(statusFrames(s.frames).map((f) => f.revision)).toEqual(expected);
        s.close();
      }
    });
  });

  it('sends bookmarks with the complete revision while idle', async () => {
    await withConvergencePaused(server, async () => {
      const { body } = await api.createMachine();
      const s = await openStream(streamUrl(body.machine_id), server.adminKey);
      await s.waitFor((f) => f.filter((x) => x.event === 'bookmark').length >= 2, 5000);
      s.close();
      expect(s.frames[0]!.event).toBe('status');
      const bookmarks = s.frames.filter((f) => f.event === 'bookmark');
      expect(Number(bookmarks[0]!.id)).toBeGreaterThanOrEqual(Number(body.status.revision));
      expect(JSON.parse(bookmarks[0]!.data)).toEqual({ revision: bookmarks[0]!.id });
    });
  });
});

describe('status stream: compaction, slow consumers and shutdown', () => {
  it('a Last-Event-ID older than the log gives a compacted frame, then the current state', async () => {
    const own = await startTestServer({ env: { EVENT_RETENTION_COUNT: '2', EVENT_RETENTION_AGE: '0' } });
    try {
      const api2 = new Api(own.url, own.adminKey);
      const { body } = await api2.createMachine();
      const m = await api2.waitForPhase(body.machine_id, 'running');
      const compacted = await own.hangar.store.compactEvents({ keepPerMachine: 2, maxAgeMs: 0 }, Date.now() + 1);
      expect(compacted).toBe(2);
      const s = await openStream(`${own.url}/v1/machines/${body.machine_id}/status/stream`, own.adminKey, { 'last-event-id': '1' });
      await s.ended;
      expect(s.frames.map((f) => f.event)).toEqual(['compacted', 'status']);
      const kept = (await own.hangar.store.readMachineEvents(body.machine_id, 0, 10)).map((e) => e.revision);
      expect(JSON.parse(s.frames[0]!.data)).toEqual({ compacted_revision: String(kept[0]) });
      expect(s.frames[0]!.id).toBeUndefined();
      expect(Number(s.frames[1]!.id)).toBe(Number(m.status.revision));
    } finally {
      await own.close();
    }
  });

  it('a watcher that stops reading is cut off past its buffer; the others keep receiving', async () => {
    const own = await startTestServer({ env: { WATCHER_BUFFER_BYTES: '8192' } });
    try {
      const api2 = new Api(own.url, own.adminKey);
      await own.hangar.reconciler.stop(); // the machine stays `accepted`: its stream stays open
      const { body } = await api2.createMachine({ vcpu: 1, memory_mib: 512, storage_gib: 5, autosleep: 'never' });
      const m = body;
      const url = `${own.url}/v1/machines/${body.machine_id}/status/stream`;
      // A raw socket that never reads: the server's buffer for it fills.
      const net = await import('node:net');
      const stuck = net.connect(Number(new URL(own.url).port), '127.0.0.1');
      stuck.pause();
      stuck.write(`GET /v1/machines/${body.machine_id}/status/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${own.adminKey}\r\nLast-Event-ID: ${m.status.revision}\r\n\r\n`);
      const closed = new Promise<void>((resolve) => stuck.on('close', () => resolve()));
      const healthy = await openStream(url, own.adminKey, { 'last-event-id': m.status.revision });
      // Megabytes of frames fill the kernel's socket buffers, then ours. Committed in-process
      // (as the reconciler commits), since HTTP round trips would take minutes to get there.
      for (let i = 0; i < 100_000 && own.hangar.app.server.listening; i++) {
        await own.hangar.store.mutateMachine(body.machine_id, (cur) => ({ patch: { autosleepSeconds: cur!.autosleepSeconds + 1 }, result: undefined }));
        // Let sockets (the healthy client's reads) run between commits, as they would in service.
        await new Promise((r) => setImmediate(r));
        if (i % 500 === 0 && (await registrySlowCount(own)) > 0) break;
      }
      expect(await registrySlowCount(own)).toBe(1);
      // The server closed its end; the client sees it once it reads what was already delivered.
      stuck.resume();
      await closed;
      const expected = (await own.hangar.store.readMachineEvents(body.machine_id, Number(m.status.revision), 1_000_000)).map((e) => e.revision);
      await healthy.waitFor((f) => f.length >= expected.length, 20_000);
      const got = statusFrames(healthy.frames).map((f) => f.revision);
      expect(got).toEqual(expected);
      healthy.close();
    } finally {
      await own.close();
    }
  }, 240_000); // on PostgreSQL, filling the kernel's socket buffers one commit at a time takes ~1 min on a busy 2-core box

  it('shutdown sends an error frame to open streams', async () => {
    const own = await startTestServer();
    const api2 = new Api(own.url, own.adminKey);
    await own.hangar.reconciler.stop(); // the machine stays `accepted`: its stream stays open
    const { body } = await api2.createMachine();
    const s = await openStream(`${own.url}/v1/machines/${body.machine_id}/status/stream`, own.adminKey);
    await s.waitFor((f) => f.length >= 1);
    await own.close();
    await s.ended;
    const error = s.frames.find((f) => f.event === 'error');
    expect(error).toBeDefined();
    expect(JSON.parse(error!.data)).toMatchObject({ error_code: 'DEPENDENCY_UNAVAILABLE', retryable: true });
  });
});

/** Runs `fn` with the reconciler stopped, so machines stay where they are and their streams stay open. */
async function withConvergencePaused(server: TestServer, fn: () => Promise<void>): Promise<void> {
  await server.hangar.reconciler.stop();
  try {
    await fn();
  } finally {
    await server.hangar.reconciler.start();
  }
}

async function registrySlowCount(server: TestServer): Promise<number> {
  const res = await new Api(server.url, server.adminKey).get('/metrics');
  const m = /hangar_status_watchers_slow_disconnects_total (\d+)/.exec(res.text);
  return Number(m?.[1] ?? 0);
}
