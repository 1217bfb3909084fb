/**
 * A deliberately cheap SSE client over a raw TCP socket: writes one HTTP/1.1
 * GET, parses the response head, decodes chunked transfer encoding, and
 * splits Server-Sent Events into (event, id, data). Much cheaper per
 * connection than fetch or EventSource, so 10,000 fit in one process.
 */
import { connect, type Socket } from 'node:net';

export interface SseEvent {
  readonly event: string;
  readonly id: string;
  readonly data: string;
}

export interface SseHandlers {
  onEvent(e: SseEvent): void;
  /** Response head parsed; `status` is the HTTP status. */
  onHead(status: number): void;
  onClose(hadError: boolean, why: string): void;
}

const CRLFCRLF = Buffer.from('\r\n\r\n');

export class SseConnection {
  private readonly socket: Socket;
  private head: Buffer | null = Buffer.alloc(0);
  private chunked = false;
  /** Bytes left in the current chunk; -1 while reading a size line; -2 while skipping the CRLF after data. */
  private chunkLeft = -1;
  private sizeLine = '';
  private crlfLeft = 0;
  private text = '';
  private event = '';
  private id = '';
  private data = '';
  private closed = false;

  /** `localAddress`: source address on the loopback (127.0.0.x), to get past the ~28k ephemeral ports per destination. */
  constructor(port: number, request: string, private readonly h: SseHandlers, localAddress?: string) {
    this.socket = connect(localAddress === undefined ? { host: '127.0.0.1', port } : { host: '127.0.0.1', port, localAddress });
    this.socket.setNoDelay(true);
    this.socket.on('connect', () => this.socket.write(request));
    this.socket.on('data', (b: Buffer) => this.onData(b));
    this.socket.on('error', (err) => this.finish(true, err.message));
    this.socket.on('close', () => this.finish(false, 'closed by server'));
  }

  close(): void {
    this.closed = true;
    this.socket.destroy();
  }

  private finish(hadError: boolean, why: string): void {
    if (this.closed) return;
    this.closed = true;
    this.h.onClose(hadError, why);
  }

  private onData(b: Buffer): void {
    if (this.head !== null) {
      const all = this.head.length === 0 ? b : Buffer.concat([this.head, b]);
      const end = all.indexOf(CRLFCRLF);
      if (end < 0) {
        this.head = all;
        return;
      }
      const headText = all.subarray(0, end).toString('latin1');
      this.head = null;
      const status = Number(headText.slice(9, 12));
      this.chunked = /\r\ntransfer-encoding:\s*chunked/i.test(headText);
      this.h.onHead(status);
      b = all.subarray(end + 4);
      if (b.length === 0) return;
    }
    if (!this.chunked) return this.onBody(b.toString('latin1'));
    this.decodeChunked(b);
  }

  private decodeChunked(b: Buffer): void {
    let i = 0;
    while (i < b.length) {
      if (this.crlfLeft > 0) {
        const n = Math.min(this.crlfLeft, b.length - i);
        this.crlfLeft -= n;
        i += n;
      } else if (this.chunkLeft > 0) {
        const n = Math.min(this.chunkLeft, b.length - i);
        this.onBody(b.toString('latin1', i, i + n));
        this.chunkLeft -= n;
        i += n;
        if (this.chunkLeft === 0) {
          this.chunkLeft = -1;
          this.crlfLeft = 2;
        }
      } else {
        const nl = b.indexOf(10, i);
        if (nl < 0) {
          this.sizeLine += b.toString('latin1', i);
          return;
        }
        this.sizeLine += b.toString('latin1', i, nl);
        i = nl + 1;
        const size = parseInt(this.sizeLine.trim(), 16);
        this.sizeLine = '';
        if (size === 0) {
          this.finish(false, 'stream ended');
          this.socket.destroy();
          return;
        }
        this.chunkLeft = size;
      }
    }
  }

  private onBody(s: string): void {
    this.text = this.text.length === 0 ? s : this.text + s;
    let start = 0;
    for (;;) {
      const nl = this.text.indexOf('\n', start);
      if (nl < 0) break;
      const line = this.text.slice(start, nl);
      start = nl + 1;
      if (line.length === 0) {
        if (this.data.length > 0 || this.event.length > 0) this.h.onEvent({ event: this.event || 'message', id: this.id, data: this.data });
        this.event = '';
        this.data = '';
        continue;
      }
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(line.charCodeAt(colon + 1) === 32 ? colon + 2 : colon + 1);
      if (field === 'event') this.event = value;
      else if (field === 'id') this.id = value;
      else if (field === 'data') this.data = this.data.length === 0 ? value : `${this.data}\n${value}`;
    }
    this.text = start === 0 ? this.text : this.text.slice(start);
  }
}

/** Reads one stream until `done(event)` says so (or it ends, or `timeoutMs` passes); returns the events seen. */
export function readStream(port: number, path: string, headers: Readonly<Record<string, string>>, done: (e: SseEvent) => boolean, timeoutMs: number): Promise<SseEvent[]> {
  const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  const request = `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAccept: text/event-stream\r\n${lines}\r\n`;
  return new Promise((ok, fail) => {
    const events: SseEvent[] = [];
    let conn: SseConnection | null = null;
    const timer = setTimeout(() => {
      conn?.close();
      fail(new Error(`${path}: no end in ${timeoutMs} ms (${events.length} events)`));
    }, timeoutMs);
    const stop = () => {
      clearTimeout(timer);
      conn?.close();
      ok(events);
    };
    conn = new SseConnection(port, request, {
      onHead: (status) => {
        if (status !== 200) {
          clearTimeout(timer);
          conn?.close();
          fail(new Error(`${path}: HTTP ${status}`));
        }
      },
      onEvent: (e) => {
        events.push(e);
        if (done(e)) stop();
      },
      onClose: () => stop(),
    });
  });
}
