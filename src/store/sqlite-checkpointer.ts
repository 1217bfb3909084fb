/**
 * SQLite WAL checkpoints, mostly on a thread of their own.
 *
 * SQLite's automatic checkpoint runs inside whichever COMMIT crosses its
 * threshold (1,000 WAL pages), on the event loop: copying those pages back
 * into the database held every request and stream frame for 20-30 ms about
 * once a second under load (bench/watch scenario b). This worker thread, with
 * a connection of its own, runs PASSIVE checkpoints (which never block the
 * writer) every 200 ms; the WAL starts over from its beginning at the next
 * write after one has caught up. SQLite's own checkpoint stays on as a
 * backstop at a higher threshold (open.ts), because a thread racing a busy
 * writer cannot promise to catch up. Stopping the worker runs a last
 * TRUNCATE checkpoint and closes its connection.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

/** How often the worker copies what the WAL holds back into the database. */
const DEFAULT_INTERVAL_MS = 200;

// Plain CommonJS so that it runs as-is from the compiled build and under the test runner alike.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.path);
db.pragma('busy_timeout = 1000');
db.pragma('synchronous = NORMAL');
const checkpoint = (mode) => {
  try {
    // The WAL is reused from its start only once a checkpoint has caught up with it, so one
    // that the writer outran (it kept appending meanwhile) is followed by another at once.
    for (let i = 0; i < 16; i++) {
      const [r] = db.pragma('wal_checkpoint(' + mode + ')');
      if (r.busy === 0 && r.checkpointed >= r.log) break;
    }
  } catch (err) {
    parentPort.postMessage({ error: String(err && err.message || err) });
  }
};
const timer = setInterval(() => checkpoint('PASSIVE'), workerData.intervalMs);
parentPort.on('message', (msg) => {
  if (msg !== 'stop') return;
  clearInterval(timer);
  checkpoint('TRUNCATE');
  db.close();
  parentPort.close();
});
`;

export class SqliteCheckpointer {
  private readonly worker: Worker;
  private readonly exited: Promise<void>;

  /** `onError`: a checkpoint failed (logged by the caller; the next one tries again). */
  constructor(path: string, opts: { intervalMs?: number; onError?: (message: string) => void } = {}) {
    const driver = createRequire(import.meta.url).resolve('better-sqlite3');
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { path, driver, intervalMs: opts.intervalMs ?? DEFAULT_INTERVAL_MS } });
    this.worker.on('message', (msg: { error?: string }) => {
      if (msg.error !== undefined) opts.onError?.(msg.error);
    });
    this.worker.on('error', (err) => opts.onError?.(err.message));
    // It must not keep the process alive on its own.
    this.worker.unref();
    this.exited = new Promise((resolve) => this.worker.once('exit', () => resolve()));
  }

  /** Runs a last checkpoint and ends the thread. */
  async stop(): Promise<void> {
    this.worker.postMessage('stop');
    await this.exited;
  }
}
