/**
 * One client watching one machine's status stream.
 *
 * Lossless resume, after etcd's synced/unsynced watchers: the watcher
 * subscribes to the change feed first (live events are held), then replays
 * from the event log, then sends the held events past what it already sent.
 * Every event therefore comes from the log or from the feed, never from
 * neither, and revision order drops the ones that come from both.
 *
 * Memory is bounded twice: held events during replay, and bytes the socket
 * has not taken yet. Past either bound the client is cut off; it resumes
 * with Last-Event-ID and loses nothing.
 */
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { endsStream } from '../../domain/lifecycle.js';
import type { Machine } from '../../domain/types.js';
import { toLifecycleResponse } from '../../domain/types.js';
import type { FeedEvent } from '../../events/change-feed.js';
import { bookmarkFrame, compactedFrame, errorFrame, statusFrame } from '../../events/frames.js';
import type { ErrorEnvelope } from '../../domain/errors.js';
import type { Store } from '../../store/store.js';

/** Events read from the log per query while replaying. */
const REPLAY_BATCH = 500;
/** Live events held while replaying, at most. */
const MAX_HELD_EVENTS = 10_000;

const CRLF = Buffer.from('\r\n');

/**
 * Frames as one HTTP/1.1 chunk (`<size hex>\r\n<frames>\r\n`), ready for the
 * socket of a chunked response. Built once and shared by every watcher it is
 * written to.
 */
function httpChunk(frames: readonly Buffer[]): Buffer {
  let size = 0;
  for (const f of frames) size += f.length;
  return Buffer.concat([Buffer.from(`${size.toString(16)}\r\n`), ...frames, CRLF]);
}

/**
 * One HTTP chunk per feed batch, shared by every watcher the batch is handed
 * to (the feed hands the same array to all watchers of a machine).
 */
const batchChunks = new WeakMap<readonly FeedEvent[], Buffer>();
function batchChunk(events: readonly FeedEvent[]): Buffer {
  let chunk = batchChunks.get(events);
  if (chunk === undefined) {
    chunk = httpChunk(events.map((e) => e.frame));
    batchChunks.set(events, chunk);
  }
  return chunk;
}

export type WatcherEnd = 'converged' | 'slow' | 'closed' | 'error' | 'gone';

export class StatusWatcher {
  readonly machineId: string;
  private readonly res: ServerResponse;
  private readonly maxBufferedBytes: number;
  private held: FeedEvent[] | null = [];
  /** Highest revision sent. */
  private sent = -1;
  /** Whether the last change sent ends the stream (converged, or failed for good). */
  private lastEnds = false;
  private ended = false;
  /** When something was last written (for bookmarks). */
  lastWriteAt: number;
  readonly bookmarkIntervalMs: number;
  private readonly onEnd: (watcher: StatusWatcher, why: WatcherEnd) => void;

  constructor(opts: {
    machineId: string;
    res: ServerResponse;
    maxBufferedBytes: number;
    bookmarkIntervalMs: number;
    now: number;
    onEnd: (watcher: StatusWatcher, why: WatcherEnd) => void;
  }) {
    this.machineId = opts.machineId;
    this.res = opts.res;
    this.maxBufferedBytes = opts.maxBufferedBytes;
    this.bookmarkIntervalMs = opts.bookmarkIntervalMs;
    this.lastWriteAt = opts.now;
    this.onEnd = opts.onEnd;
  }

  get isLive(): boolean {
    return this.held === null && !this.ended;
  }

  /** Feed listener: live changes of this machine, in revision order. */
  readonly onFeed = (events: readonly FeedEvent[]): void => {
    if (this.ended) return;
    if (this.held !== null) {
      if (this.held.length + events.length > MAX_HELD_EVENTS) return this.end('slow');
      for (const e of events) this.held.push(e);
      return;
    }
    this.sendEvents(events);
  };

  /**
   * Replays what the client has not seen, then goes live. Without
   * `lastEventId`: the current state. With it: every change after it, or a
   * `compacted` frame and the current state when the log no longer has them.
   */
  async catchUp(store: Store, machine: Machine, lastEventId: number | undefined, now: number): Promise<void> {
    if (lastEventId === undefined) {
      this.sendSnapshot(machine);
    } else if (lastEventId < machine.logCompactedRevision) {
      const [oldest] = await store.readMachineEvents(machine.machineId, machine.logCompactedRevision, 1);
      this.write(compactedFrame(oldest?.revision ?? machine.revision));
      this.sendSnapshot(machine);
    } else {
      this.sent = lastEventId;
      // Nothing to replay: a converged machine ends at once, without a frame.
      this.lastEnds = lastEventId >= machine.revision && endsStream(machine);
      for (;;) {
        if (this.ended) return;
        const batch = await store.readMachineEvents(machine.machineId, this.sent, REPLAY_BATCH);
        for (const e of batch) this.sendOne(e.revision, statusFrame(e.revision, e.body), e.endsStream);
        if (batch.length < REPLAY_BATCH) break;
      }
    }
    if (this.ended) return;
    const held = this.held ?? [];
    this.held = null;
    this.lastWriteAt = now;
    if (held.length > 0) this.sendEvents(held);
    else if (this.lastEnds) this.end('converged');
  }

  private sendSnapshot(m: Machine): void {
    const body = JSON.stringify(toLifecycleResponse(m));
    this.sendOne(m.revision, statusFrame(m.revision, body), endsStream(m));
  }

  private sendOne(revision: number, frame: Buffer, ends: boolean): void {
    if (revision <= this.sent) return;
    this.sent = revision;
    this.lastEnds = ends;
    this.write(frame);
  }

  /** Writes a batch as one write, then ends if the last change converged. */
  private sendEvents(events: readonly FeedEvent[]): void {
    // The common case (every event new to this watcher) allocates nothing: this runs once per watcher per batch.
    const fresh = events[0]!.revision > this.sent ? events : events.filter((e) => e.revision > this.sent);
    if (fresh.length === 0) return;
    const last = fresh[fresh.length - 1]!;
    this.sent = last.revision;
    this.lastEnds = last.endsStream;
    if (fresh === events) this.writeShared(events);
    else for (const e of fresh) this.write(e.frame);
    if (this.lastEnds) this.end('converged');
  }

  /** Idle keep-alive that also tells the client how far it is complete. */
  bookmark(revision: number, now: number): void {
    if (!this.isLive) return;
    // Never behind what was sent: a resume from the bookmark must not replay.
    this.write(bookmarkFrame(Math.max(revision, this.sent)));
    this.lastWriteAt = now;
  }

  /** Sends an error frame and ends (shutdown, store lost). */
  fail(envelope: ErrorEnvelope): void {
    if (this.ended) return;
    this.write(errorFrame(envelope));
    this.end('error');
  }

  /** The client went away. */
  closed(): void {
    if (this.ended) return;
    this.ended = true;
    this.onEnd(this, 'closed');
  }

  private write(frame: Buffer): void {
    if (this.ended) return;
    const socket = this.directSocket();
    if (socket !== null) socket.write(httpChunk([frame]));
    else this.res.write(frame);
    this.wrote();
  }

  /** A feed batch every watcher of the machine gets whole: one pre-framed chunk, shared. */
  private writeShared(events: readonly FeedEvent[]): void {
    if (this.ended) return;
    const socket = this.directSocket();
    if (socket !== null) socket.write(batchChunk(events));
    else for (const e of events) this.res.write(e.frame);
    this.wrote();
  }

  /**
   * The socket of a chunked response whose headers are out, to write
   * pre-framed chunks to directly. Node's `res.write` costs a cork, a
   * nextTick, a hex-size string and a four-part writev per write and watcher;
   * at 19,000 watchers that garbage, kept alive by writes the kernel had no
   * room for yet, doubled the process's memory. The response still ends
   * through `res.end()`, which writes the last chunk after ours.
   */
  private directSocket(): Socket | null {
    const { res } = this;
    const socket = res.socket;
    return res.headersSent && res.chunkedEncoding && socket !== null && !socket.destroyed ? socket : null;
  }

  private wrote(): void {
    this.lastWriteAt = Date.now();
    if (this.res.writableLength > this.maxBufferedBytes) this.end('slow');
  }

  private end(why: WatcherEnd): void {
    if (this.ended) return;
    this.ended = true;
    this.held = null;
    if (why === 'slow') this.res.destroy();
    else this.res.end();
    this.onEnd(this, why);
  }
}
