/**
 * A status-stream client for tests, on eventsource-parser (the parser the
 * `eventsource` package uses): collects frames, can stop reading, reports
 * how the stream ended.
 */
import { createParser } from 'eventsource-parser';
import type { EventSourceMessage } from 'eventsource-parser';

export interface SseFrame {
  readonly event: string;
  readonly id: string | undefined;
  readonly data: string;
}

export interface SseStream {
  readonly status: number;
  readonly headers: Headers;
  readonly frames: SseFrame[];
  /** Retry value announced by the server. */
  readonly retry: () => number | undefined;
  /** Resolves when the server ends the stream (or it errors). */
  readonly ended: Promise<'end' | 'error'>;
  /** The body as text when the server answered with an error instead of a stream. */
  readonly errorBody: string | undefined;
  close(): void;
  /** Resolves once `predicate` holds for the frames received so far. */
  waitFor(predicate: (frames: SseFrame[]) => boolean, timeoutMs?: number): Promise<void>;
}

export async function openStream(url: string, key: string, headers: Record<string, string> = {}): Promise<SseStream> {
  const controller = new AbortController();
  const res = await fetch(url, { headers: { authorization: `Bearer ${key}`, accept: 'text/event-stream', ...headers }, signal: controller.signal });
  const frames: SseFrame[] = [];
  let retry: number | undefined;
  const waiters: (() => void)[] = [];
  const notify = () => waiters.splice(0).forEach((w) => w());
  if (!res.ok || res.body === null) {
    const text = await res.text();
    return {
      status: res.status,
      headers: res.headers,
      frames,
      retry: () => undefined,
      ended: Promise.resolve('end'),
      errorBody: text,
      close: () => undefined,
      waitFor: async () => undefined,
    };
  }
  const parser = createParser({
    onEvent(msg: EventSourceMessage) {
      frames.push({ event: msg.event ?? 'message', id: msg.id, data: msg.data });
      notify();
    },
    onRetry(ms: number) {
      retry = ms;
    },
  });
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  const ended = (async (): Promise<'end' | 'error'> => {
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return 'end';
        parser.feed(decoder.decode(value, { stream: true }));
      }
    } catch {
      return 'error';
    } finally {
      notify();
    }
  })();
  let finished = false;
  void ended.then(() => {
    finished = true;
    notify();
  });
  return {
    status: res.status,
    headers: res.headers,
    frames,
    retry: () => retry,
    ended,
    errorBody: undefined,
    close: () => controller.abort(),
    async waitFor(predicate, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (!predicate(frames)) {
        if (finished) throw new Error(`stream ended before the condition held; frames: ${frames.map((f) => `${f.event}:${f.id}`).join(' ')}`);
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`timed out; frames: ${frames.map((f) => `${f.event}:${f.id}`).join(' ')}`);
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, left);
          waiters.push(() => {
            clearTimeout(t);
            resolve();
          });
        });
      }
    },
  };
}

export function statusFrames(frames: readonly SseFrame[]): { revision: number; body: any }[] {
  return frames.filter((f) => f.event === 'status').map((f) => ({ revision: Number(f.id), body: JSON.parse(f.data) }));
}
