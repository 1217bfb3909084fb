/**
 * Server-Sent Events frames. Built once per event and shared, byte for byte,
 * by every watcher. Ids and event names are numbers and fixed words here, so
 * no CR/LF can reach a field; bodies are single-line JSON.
 */
import type { ErrorEnvelope } from '../domain/errors.js';

export function statusFrame(revision: number, body: string): Buffer {
  return Buffer.from(`event: status\nid: ${revision}\ndata: ${body}\n\n`);
}

export function retryFrame(retryMs: number): Buffer {
  return Buffer.from(`retry: ${Math.trunc(retryMs)}\n\n`);
}

export function bookmarkFrame(revision: number): Buffer {
  return Buffer.from(`event: bookmark\nid: ${revision}\ndata: {"revision":"${revision}"}\n\n`);
}

/** No `id`: a client that does not know the frame resumes from its last status. */
export function compactedFrame(oldestKeptRevision: number): Buffer {
  return Buffer.from(`event: compacted\ndata: {"compacted_revision":"${oldestKeptRevision}"}\n\n`);
}

export function errorFrame(envelope: ErrorEnvelope): Buffer {
  return Buffer.from(`event: error\ndata: ${JSON.stringify(envelope)}\n\n`);
}
