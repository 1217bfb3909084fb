/**
 * The two systems under test of the watch benchmark, behind one interface:
 * Hangar's status stream (machines held unconverged in placement_pending) and
 * the bare broadcaster. Each `start` is a fresh process.
 */
import { fork } from 'node:child_process';
import { join } from 'node:path';
import { countPhases, JsonClient, sendFresh, type Lifecycle } from '../lib/http.js';
import { createBenchDatabase, type BenchDatabase } from '../lib/pg.js';
import { REPO_ROOT, startHangarProcess, stopChild, track } from '../lib/server.js';
import { readStream } from '../lib/sse-client.js';
import { forEachLimit, sleep, waitUntil } from '../lib/util.js';

export interface Target {
  readonly name: string;
  /** The process started (for Hangar with replicas: the cluster primary). */
  readonly pid: number;
  /** The processes that hold the watchers and whose RSS/CPU is measured (summed): [pid], or the replica workers. */
  servingPids(): number[];
  readonly port: number;
  /** Stream paths, one per topic (machine). */
  readonly paths: readonly string[];
  readonly authorization: string | undefined;
  /** Makes one change to topic `i`; resolves with the revision it committed. */
  change(i: number): Promise<number>;
  /** Waits until the system has no work left that may still commit changes. */
  settle(): Promise<void>;
  /** Every revision of topic `i` the system committed (the authoritative sequence a watcher must see), or undefined: the revisions `change` returned. */
  history(i: number): Promise<number[] | undefined>;
  /** Hangar (one process): where its memory is (heap used / total, external) and its event-loop delay since the last call, from /metrics, for the log. */
  heap?(): Promise<string>;
  stop(): Promise<void>;
}

export interface TargetOptions {
  readonly simLatencyMs: number;
  readonly env: Readonly<Record<string, string>>;
  readonly nodeArgs: readonly string[];
  /** Hangar only: 'postgres' runs on a fresh database created on the server of `databaseUrl`. */
  readonly store?: 'sqlite' | 'postgres';
  /** Hangar only: `serve --replicas N` (PostgreSQL). */
  readonly replicas?: number;
  /** Hangar only: keep-alive connections the changes (PATCHes) are sent over; default 32. */
  readonly changeConnections?: number;
  /** Maintenance URL of the PostgreSQL server (a database to connect to for create/drop database). */
  readonly databaseUrl?: string;
}

/** Hangar with one tiny host taken by a filler machine: every watched machine stays placement_pending (NoReadyHosts), so its stream stays open. */
export async function startHangarTarget(topics: number, opts: TargetOptions): Promise<Target> {
  const replicas = opts.replicas ?? 1;
  let db: BenchDatabase | undefined;
  if (opts.store === 'postgres') {
    db = await createBenchDatabase(opts.databaseUrl);
    console.log(`  database ${db.name}`);
  }
  let server: Awaited<ReturnType<typeof startHangarProcess>>;
  try {
    server = await startHangarProcess({
      simLatencyMs: opts.simLatencyMs,
      simHosts: '1x1/1024/10',
      env: opts.env,
      nodeArgs: opts.nodeArgs,
      ...(db !== undefined ? { databaseUrl: db.url } : {}),
      replicas,
      startTimeoutMs: 60_000,
    });
  } catch (err) {
    await db?.drop();
    throw err;
  }
  const stopServer = async () => {
    try {
      await server.stop();
    } finally {
      await db?.drop();
    }
  };
  const client = new JsonClient(server.url, server.adminKey, 32);
  // Changes go over `changeConnections` keep-alive connections (default 32, the pool of the SQLite mode). With
  // replicas and 1 connection, every change is made on one replica, and the watchers on the other(s) get every
  // frame through LISTEN/NOTIFY + an event-log read; with 32 the changes land on both (each frame still reaches
  // the watchers of the other replica that way).
  const changeConnections = opts.changeConnections ?? 32;
  const changer = changeConnections !== 32 ? new JsonClient(server.url, server.adminKey, changeConnections) : client;
  const size = { vcpu: 1, memory_mib: 1024, storage_gib: 10 };
  const ids: string[] = new Array<string>(topics);
  try {
    await client.json('POST', '/v1/machines', size);
    await waitUntil('the filler machine to run', async () => ((await countPhases(client)).get('running') ?? 0) === 1, 30_000, 50);
    await forEachLimit(topics, 32, async (i) => {
      ids[i] = (await client.json<Lifecycle>('POST', '/v1/machines', size)).machine_id;
    });
    await waitUntil(
      `${topics} machines placement_pending/NoReadyHosts`,
      async () => ((await countPhases(client)).get('placement_pending/NoReadyHosts') ?? 0) === topics,
      180_000,
      250,
    );
    await sleep(1000);
  } catch (err) {
    client.close();
    changer.close();
    await stopServer();
    throw err;
  }
  // Unique autosleep values: every PATCH changes the machine, so each commits a revision.
  let n = 1000;
  const paths = ids.map((id) => `/v1/machines/${id}/status/stream`);
  return {
    name: db === undefined ? 'hangar' : `hangar-pg x${replicas}${changeConnections === 1 ? ' (changes on 1 replica)' : ''}`,
    pid: server.pid,
    servingPids: () => server.servingPids(),
    port: server.port,
    paths,
    authorization: `Bearer ${server.adminKey}`,
    change: async (i) => {
      const m = await changer.json<Lifecycle>('PATCH', `/v1/machines/${ids[i]}`, { autosleep: `${n++}s` });
      return Number(m.status.revision);
    },
    settle: async () => {
      // The reconciler looks at each PATCHed machine; wait for an empty queue twice. With replicas, each replica's
      // queue: 2 x replicas requests on new connections (the cluster primary hands them out round-robin).
      let zeros = 0;
      const queueEmpty = async (): Promise<boolean> => {
        const text = replicas > 1 ? (await sendFresh(server.url, server.adminKey, 'GET', '/metrics')).body : (await client.send('GET', '/metrics')).body;
        const m = /^hangar_reconcile_queue_length (\d+)/m.exec(text);
        return m !== null && m[1] === '0';
      };
      await waitUntil(
        'the reconcile queue to drain',
        async () => {
          let all = true;
          for (let r = 0; r < (replicas > 1 ? 2 * replicas : 1); r++) if (!(await queueEmpty())) all = false;
          zeros = all ? zeros + 1 : 0;
          return zeros >= 2;
        },
        120_000,
        100,
      );
    },
    ...(replicas > 1
      ? {}
      : {
          heap: async () => {
            const text = (await client.send('GET', '/metrics')).body;
            const metric = (name: string, scale: number, digits: number): string => {
              const m = new RegExp(`^hangar_nodejs_${name} (\\S+)`, 'm').exec(text);
              return m === null ? '?' : (Number(m[1]) * scale).toFixed(digits);
            };
            const mib = (name: string): string => metric(name, 2 ** -20, 0);
            const ms = (name: string): string => metric(name, 1000, 1);
            // prom-client resets the event-loop delay histogram on every scrape: these cover the time since the last one.
            return `heap ${mib('heap_size_used_bytes')}/${mib('heap_size_total_bytes')} MiB, external ${mib('external_memory_bytes')} MiB, event-loop delay p99 ${ms('eventloop_lag_p99_seconds')} ms max ${ms('eventloop_lag_max_seconds')} ms`;
          },
        }),
    history: async (i) => {
      // The event log, replayed from the start with Last-Event-ID: 0, up to the machine's current revision.
      const current = Number((await client.json<Lifecycle>('GET', `/v1/machines/${ids[i]}`)).status.revision);
      const events = await readStream(server.port, paths[i]!, { authorization: `Bearer ${server.adminKey}`, 'last-event-id': '0' }, (e) => e.event === 'status' && Number(e.id) >= current, 30_000);
      if (events.some((e) => e.event === 'compacted')) throw new Error(`${ids[i]}: the event log was compacted; history unknown`);
      return events.filter((e) => e.event === 'status').map((e) => Number(e.id));
    },
    stop: async () => {
      client.close();
      changer.close();
      await stopServer();
    },
  };
}

export async function startBareTarget(topics: number, opts: TargetOptions): Promise<Target> {
  const child = fork(join(REPO_ROOT, 'dist/bench/watch/bare-broadcaster.js'), ['0'], { execArgv: [...opts.nodeArgs], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  track(child);
  const port = await new Promise<number>((ok, fail) => {
    child.once('message', (m: { port: number }) => ok(m.port));
    child.once('exit', (code) => fail(new Error(`bare broadcaster exited with ${code}`)));
  });
  const client = new JsonClient(`http://127.0.0.1:${port}`, undefined, 32);
  const paths = Array.from({ length: topics }, (_, i) => `/topics/${i}/stream`);
  return {
    name: 'bare',
    pid: child.pid ?? -1,
    servingPids: () => (child.pid === undefined ? [] : [child.pid]),
    port,
    paths,
    authorization: undefined,
    change: async (i) => Number((await client.json<{ revision: string }>('POST', `/topics/${i}/change`)).revision),
    settle: async () => {},
    history: async () => undefined,
    stop: async () => {
      client.close();
      await stopChild(child, 2000);
    },
  };
}
