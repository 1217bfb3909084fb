/**
 * Follows GET /v1/machines/{id}/status/stream until the machine converges.
 *
 * The server ends the stream by closing it after a converged frame (or a
 * failed, non-retryable one); EventSource sees any close as an error and
 * would reconnect. So the end of a connection is judged here from the last
 * status frame: converged or terminally failed -> done; otherwise let
 * EventSource reconnect with Last-Event-ID = the last id seen, so nothing is
 * lost or repeated. The judgement waits for the connection's end rather than
 * the converged frame itself: a replayed frame that was converged at its time
 * may be followed by later changes.
 */
import { EventSource } from 'eventsource';
import type { FetchLike } from 'eventsource';
import type { ErrorBody, HangarClient, LifecycleResponse } from './client.js';
import { ApiCallError, parseJson, toErrorBody } from './client.js';
import { isConverged, isTerminalFailure } from './format.js';

export type WatchOutcome =
  /** The machine reached its desired state. */
  | { readonly kind: 'converged'; readonly machine: LifecycleResponse }
  /** Phase failed with retryable false: it stays so until the desired state changes. */
  | { readonly kind: 'failed'; readonly machine: LifecycleResponse }
  /** An `event: error` frame with retryable false. */
  | { readonly kind: 'stream-error'; readonly error: ErrorBody; readonly machine: LifecycleResponse | undefined };

export interface WatchOptions {
  readonly client: HangarClient;
  readonly machineId: string;
  /** Resume after this revision (sent as Last-Event-ID on the first connection). */
  readonly lastEventId?: string;
  /** The state already known (a mutation's answer): the baseline for timings and convergence. */
  readonly initial?: LifecycleResponse;
  /** Each status frame, with the time since the previous one (commit times). */
  readonly onStatus?: (machine: LifecycleResponse, sincePreviousMs: number) => void;
  /** Compaction, reconnects, retryable server errors. */
  readonly onNote?: (note: string) => void;
  /** Connection attempts in a row that may fail before giving up (fewer when none ever succeeded). */
  readonly maxConnectFailures?: number;
}

/** Resolves with how the watch ended; rejects with ApiCallError on an HTTP error answer, Error when the server stays unreachable. */
export function watchMachine(opts: WatchOptions): Promise<WatchOutcome> {
  const { client, machineId } = opts;
  const note = opts.onNote ?? (() => undefined);
  const maxFailures = opts.maxConnectFailures ?? 10;

  return new Promise<WatchOutcome>((resolve, reject) => {
    let lastId: string | undefined = opts.lastEventId;
    let last: LifecycleResponse | undefined = opts.initial;
    let framesThisConnection = 0;
    let opened = false;
    let failures = 0;
    let everOpened = false;
    let httpError: ApiCallError | undefined;
    let done = false;

    const finish = (fn: () => void) => {
      if (done) return;
      done = true;
      es.close();
      // Inside an error handler, EventSource arms its reconnect timer after the
      // handlers return; close again once it has, so nothing keeps the process up.
      queueMicrotask(() => es.close());
      fn();
    };

    // Auth headers and our own Last-Event-ID: the first connection may resume
    // from a revision given by the user, and bookmarks move it on too.
    const fetchWithAuth: FetchLike = async (input, init) => {
      const headers: Record<string, string> = { ...init.headers, ...client.authHeaders() };
      delete headers['Last-Event-ID'];
      if (lastId !== undefined) headers['last-event-id'] = lastId;
      const res = await fetch(input, { ...init, headers } as RequestInit);
      if (res.status !== 200) {
        // EventSource drops the body of an error answer; keep the envelope.
        const text = await res.text();
        httpError = new ApiCallError(res.status, toErrorBody(res.status, parseJson(text), text));
      }
      return res;
    };

    const es = new EventSource(client.streamUrl(machineId), { fetch: fetchWithAuth });

    es.addEventListener('open', () => {
      opened = true;
      everOpened = true;
      failures = 0;
      framesThisConnection = 0;
    });

    es.addEventListener('status', (ev: MessageEvent) => {
      if (done) return;
      if (ev.lastEventId !== '') lastId = ev.lastEventId;
      const machine = parseJson(String(ev.data)) as LifecycleResponse | undefined;
      if (machine?.status === undefined) {
        note(`ignoring a malformed status frame: ${String(ev.data).slice(0, 200)}`);
        return;
      }
      framesThisConnection++;
      const since = last === undefined ? 0 : Date.parse(machine.status.last_progress_at) - Date.parse(last.status.last_progress_at);
      last = machine;
      opts.onStatus?.(machine, Number.isFinite(since) ? since : 0);
    });

    es.addEventListener('bookmark', (ev: MessageEvent) => {
      if (ev.lastEventId !== '') lastId = ev.lastEventId;
    });

    es.addEventListener('compacted', (ev: MessageEvent) => {
      const body = parseJson(String(ev.data)) as { compacted_revision?: string } | undefined;
      note(`history up to revision ${body?.compacted_revision ?? '?'} was compacted; continuing from the current state`);
    });

    es.addEventListener('error', (ev: Event) => {
      if (done) return;
      // A server `event: error` frame: the error envelope.
      if (ev instanceof MessageEvent) {
        const envelope = toErrorBody(0, parseJson(String(ev.data)), String(ev.data));
        if (envelope.retryable === false) {
          finish(() => resolve({ kind: 'stream-error', error: envelope, machine: last }));
        } else {
          note(`server: ${envelope.error_code}: ${envelope.message}; reconnecting`);
        }
        return;
      }
      // The connection failed or ended.
      if (httpError !== undefined) {
        const err = httpError;
        finish(() => reject(err));
        return;
      }
      if (es.readyState === EventSource.CLOSED) {
        const message = (ev as Event & { message?: string }).message ?? 'stream failed';
        finish(() => reject(new Error(`status stream of ${machineId}: ${message}`)));
        return;
      }
      const wasOpen = opened;
      opened = false;
      // No message: the server ended the response. A message: the connection broke.
      const endedByServer = (ev as Event & { message?: string }).message === undefined;
      if (wasOpen && endedByServer) {
        if (last !== undefined && isConverged(last)) return finish(() => resolve({ kind: 'converged', machine: last! }));
        if (last !== undefined && isTerminalFailure(last)) return finish(() => resolve({ kind: 'failed', machine: last! }));
        if (last === undefined && framesThisConnection === 0) {
          // Resumed at or past the machine's revision and nothing followed: it was converged already.
          void settleFromGet();
          return;
        }
        note(`stream ended before convergence; reconnecting from revision ${lastId ?? '(current state)'}`);
        return;
      }
      if (wasOpen) {
        // Even after a frame that looks converged: a replay may go on. The
        // resumed stream ends at once if that frame was the last change.
        note(`connection lost; reconnecting from revision ${lastId ?? '(current state)'}`);
        return;
      }
      failures++;
      if (failures >= (everOpened ? maxFailures : Math.min(3, maxFailures))) {
        const message = (ev as Event & { message?: string }).message ?? 'connection failed';
        finish(() => reject(new Error(`cannot reach ${client.config.baseUrl}: ${message}`)));
      }
    });

    async function settleFromGet(): Promise<void> {
      try {
        const { body } = await client.getMachine(machineId);
        if (isConverged(body)) finish(() => resolve({ kind: 'converged', machine: body }));
        else if (isTerminalFailure(body)) finish(() => resolve({ kind: 'failed', machine: body }));
        // Otherwise EventSource reconnects and the stream goes on.
      } catch (err) {
        finish(() => reject(err));
      }
    }
  });
}
