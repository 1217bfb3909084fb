/**
 * The output of one running command: byte counts, the first `limitBytes` of
 * each stream (the rest is counted, not kept), and the chunks not yet written
 * as events. Chunks are decoded with a streaming decoder, so a UTF-8
 * character split across two reads is not mangled; consecutive chunks of one
 * stream are coalesced into one event, so a chatty command costs one row per
 * flush, not one per read.
 */
import { StringDecoder } from 'node:string_decoder';
import type { OutputTotals, StreamName } from '../domain/executions.js';

interface StreamState {
  kept: Buffer[];
  keptBytes: number;
  totalBytes: number;
  readonly decoder: StringDecoder;
}

export interface PendingChunk {
  readonly stream: StreamName;
  readonly text: string;
}

export class OutputCapture {
  private readonly streams: Record<StreamName, StreamState>;
  private pending: { stream: StreamName; parts: string[] }[] = [];

  constructor(private readonly limitBytes: number) {
    const fresh = (): StreamState => ({ kept: [], keptBytes: 0, totalBytes: 0, decoder: new StringDecoder('utf8') });
    this.streams = { stdout: fresh(), stderr: fresh() };
  }

  add(stream: StreamName, chunk: Buffer): void {
    const s = this.streams[stream];
    s.totalBytes += chunk.length;
    const room = this.limitBytes - s.keptBytes;
    if (room <= 0) return;
    const kept = chunk.length <= room ? chunk : chunk.subarray(0, room);
    s.kept.push(kept);
    s.keptBytes += kept.length;
    this.queue(stream, s.decoder.write(kept));
  }

  /** At the end: the decoders' leftovers (an incomplete character) become replacement characters. */
  end(): void {
    for (const stream of ['stdout', 'stderr'] as const) this.queue(stream, this.streams[stream].decoder.end());
  }

  get hasPending(): boolean {
    return this.pending.length > 0;
  }

  /** The chunks to write as events now, in arrival order. */
  takePending(): PendingChunk[] {
    const out = this.pending.map((p) => ({ stream: p.stream, text: p.parts.join('') }));
    this.pending = [];
    return out;
  }

  text(stream: StreamName): string {
    return Buffer.concat(this.streams[stream].kept).toString('utf8');
  }

  totals(): OutputTotals {
    const { stdout, stderr } = this.streams;
    return {
      stdoutBytes: stdout.totalBytes,
      stderrBytes: stderr.totalBytes,
      stdoutTruncated: stdout.totalBytes > stdout.keptBytes,
      stderrTruncated: stderr.totalBytes > stderr.keptBytes,
    };
  }

  private queue(stream: StreamName, text: string): void {
    if (text === '') return;
    const last = this.pending[this.pending.length - 1];
    if (last !== undefined && last.stream === stream) last.parts.push(text);
    else this.pending.push({ stream, parts: [text] });
  }
}
