/**
 * `hangar machines watch` beyond the happy path: live frames with timings,
 * and a connection that drops mid-stream (through a proxy that cuts it),
 * resumed with Last-Event-ID without losing or repeating a change.
 */
import type { IncomingHttpHeaders, Server } from 'node:http';
import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LifecycleResponse } from '../../src/domain/types.js';
import { Api } from '../helpers/http.js';
import type { TestServer } from '../helpers/server.js';
import { startTestServer } from '../helpers/server.js';
import { openStream } from '../helpers/sse.js';
import { assertBuilt, machinesCli } from './run-cli.js';

const FRAME_LINE = /^\s+\+(\d+\.\d{3})s\s+(\w+)\s+\((\w+)\)\s+rev (\d+)/;

function frameLines(stdout: string): { seconds: number; phase: string; reason: string; revision: number }[] {
  return stdout
    .split('\n')
    .map((l) => FRAME_LINE.exec(l))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ seconds: Number(m[1]), phase: m[2]!, reason: m[3]!, revision: Number(m[4]) }));
}

/** Forwards to `target`; the first status-stream connection is cut right after its first status frame. */
async function startCuttingProxy(target: string): Promise<{ url: string; streamRequests: IncomingHttpHeaders[]; close(): Promise<void> }> {
  const upstream = new URL(target);
  const streamRequests: IncomingHttpHeaders[] = [];
  const server: Server = createServer((req, res) => {
    const isStream = req.url?.endsWith('/status/stream') === true;
    if (isStream) streamRequests.push(req.headers);
    const cut = isStream && streamRequests.length === 1;
    const up = httpRequest({ host: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers: req.headers }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      if (!cut) {
        ur.pipe(res);
        return;
      }
      let seen = '';
      let cutting = false;
      ur.setEncoding('utf8').on('data', (chunk: string) => {
        if (cutting) return;
        seen += chunk;
        const start = seen.indexOf('event: status');
        const end = start === -1 ? -1 : seen.indexOf('\n\n', start);
        if (end !== -1) {
          cutting = true;
          // Cut once the bytes are out, so the client has the frame.
          res.write(seen.slice(0, end + 2), () => {
            ur.destroy();
            res.destroy();
          });
        }
      });
    });
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    streamRequests,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

describe('hangar machines watch', () => {
  let server: TestServer;
  let api: Api;

  beforeAll(async () => {
    assertBuilt();
    // Slow runtime steps, so a watch started after a mutation sees the rest live (the CLI takes over a second to start on a loaded box).
    server = await startTestServer({ env: { SIM_LATENCY_MS: '3000' } });
    api = new Api(server.url, server.adminKey);
  });
  afterAll(async () => {
    await server?.close();
  });

  it('follows a sleep live and times each frame from the previous one', async () => {
    const cli = machinesCli(server);
    const created = await api.createMachine();
    const running = await api.waitForPhase(created.body.machine_id, 'running');
    const sleep = await api.post(`/v1/machines/${running.machine_id}/sleep`);
    expect(sleep.status).toBe(202);
    const r = await cli(['watch', running.machine_id]);
    expect(r.code, r.stderr).toBe(0);
    const frames = frameLines(r.stdout);
    // The first frame is the state when the watch connected (running or stopping); the rest came live.
    expect(['running', 'stopping']).toContain(frames[0]!.phase);
    expect(frames.at(-1)).toMatchObject({ phase: 'sleeping', reason: 'Stopped' });
    expect(frames.map((f) => f.phase)).not.toContain('accepted');
    for (let i = 1; i < frames.length; i++) expect(frames[i]!.revision).toBeGreaterThan(frames[i - 1]!.revision);
    // Stopping takes the runtime's 3 s; the sleeping frame says so.
    expect(frames.at(-1)!.seconds).toBeGreaterThanOrEqual(1);
    const last = (await api.get<LifecycleResponse>(`/v1/machines/${running.machine_id}`)).body;
    expect(frames.at(-1)!.revision).toBe(Number(last.status.revision));
  });
});

describe('hangar machines watch, dropped connection', () => {
  let server: TestServer;
  let api: Api;
  let proxy: Awaited<ReturnType<typeof startCuttingProxy>>;

  beforeAll(async () => {
    assertBuilt();
    server = await startTestServer();
    api = new Api(server.url, server.adminKey);
    proxy = await startCuttingProxy(server.url);
  });
  afterAll(async () => {
    await proxy?.close();
    await server?.close();
  });

  it('reconnects with the last id it saw and loses nothing', async () => {
    const created = await api.createMachine();
    const running = await api.waitForPhase(created.body.machine_id, 'running');
    const sleep = await api.post(`/v1/machines/${running.machine_id}/sleep`);
    await api.waitForPhase(running.machine_id, 'sleeping');

    const cli = machinesCli({ url: proxy.url, adminKey: server.adminKey });
    const r = await cli(['watch', running.machine_id, '--last-event-id', running.status.revision]);
    expect(r.code, r.stderr).toBe(0);
    const frames = frameLines(r.stdout);
    expect(frames.map((f) => `${f.phase} ${f.reason}`)).toEqual(['running SleepRequested', 'stopping SleepRequested', 'sleeping Stopped']);
    expect(r.stdout).toContain(`note: connection lost; reconnecting from revision ${sleep.body.status.revision}`);
    expect(proxy.streamRequests.map((h) => h['last-event-id'])).toEqual([running.status.revision, sleep.body.status.revision]);
  });
});

describe('hangar machines watch, compacted history', () => {
  let server: TestServer;
  let api: Api;

  beforeAll(async () => {
    assertBuilt();
    server = await startTestServer({ env: { EVENT_RETENTION_COUNT: '1', EVENT_RETENTION_AGE: '1s', MAINTENANCE_INTERVAL_MS: '20' } });
    api = new Api(server.url, server.adminKey);
  });
  afterAll(async () => {
    await server?.close();
  });

  it('notes the compacted frame and ends with the current state', async () => {
    const created = await api.createMachine();
    const running = await api.waitForPhase(created.body.machine_id, 'running');
    // Wait until maintenance has dropped the early events of this machine.
    const deadline = Date.now() + 10_000;
    for (;;) {
      const probe = await openStream(`${server.url}/v1/machines/${running.machine_id}/status/stream`, server.adminKey, { 'last-event-id': '0' });
      await probe.ended;
      if (probe.frames.some((f) => f.event === 'compacted')) break;
      if (Date.now() > deadline) throw new Error(`never compacted; frames: ${probe.frames.map((f) => f.event).join(' ')}`);
    }
    const r = await machinesCli(server)(['watch', running.machine_id, '--last-event-id', '0']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ {2}note: history up to revision \d+ was compacted; continuing from the current state$/);
    expect(frameLines(r.stdout)).toEqual([expect.objectContaining({ phase: 'running', revision: Number(running.status.revision) })]);
    expect(lines.at(-1)).toBe(`${running.machine_id} is running (rev ${running.status.revision})`);
  });
});
