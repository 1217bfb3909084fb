/**
 * A lean HTTP/1.1 keep-alive client for load generation: one request at a
 * time per socket, the request written as one string, the response read by
 * its Content-Length. The server sees the same requests as from node:http
 * (method, path, headers, body), but the load generator spends a fraction
 * of the CPU per request: on a 2-core box it shares with the server, what
 * the generator burns is taken from the server being measured.
 */
import { connect, type Socket } from 'node:net';
import type { Response } from './http.js';

const HEADER_END = Buffer.from('\r\n\r\n');

interface Pending {
  readonly start: number;
  readonly resolve: (r: Response) => void;
  readonly reject: (err: Error) => void;
}

/** One keep-alive connection. */
export class RawConnection {
  private readonly socket: Socket;
  private buffer: Buffer = Buffer.alloc(0);
  private pending: Pending | null = null;
  private readonly ready: Promise<void>;

  constructor(
    private readonly host: string,
    private readonly port: number,
    private readonly apiKey: string | undefined,
  ) {
    this.socket = connect({ host, port, noDelay: true });
    this.ready = new Promise((resolve, reject) => {
      this.socket.once('connect', () => resolve());
      this.socket.once('error', reject);
    });
    this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.socket.on('error', (err) => this.fail(err));
    this.socket.on('close', () => this.fail(new Error('connection closed by the server')));
  }

  async send(method: string, path: string, body: string | undefined, headers: Readonly<Record<string, string>> = {}): Promise<Response> {
    await this.ready;
    if (this.pending !== null) throw new Error('one request at a time per connection');
    let head = `${method} ${path} HTTP/1.1\r\nhost: ${this.host}:${this.port}\r\naccept: application/json\r\n`;
    if (this.apiKey !== undefined) head += `authorization: Bearer ${this.apiKey}\r\n`;
    for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`;
    if (body !== undefined) head += `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n`;
    const start = performance.now();
    return new Promise<Response>((resolve, reject) => {
      this.pending = { start, resolve, reject };
      this.socket.write(body === undefined ? `${head}\r\n` : `${head}\r\n${body}`);
    });
  }

  close(): void {
    this.pending = null;
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    const end = this.buffer.indexOf(HEADER_END);
    if (end < 0) return;
    const head = this.buffer.toString('latin1', 0, end);
    const length = /\r\ncontent-length: *(\d+)/i.exec(head);
    if (length === null) return this.fail(new Error(`response without content-length: ${head.slice(0, 200)}`));
    const total = end + 4 + Number(length[1]);
    if (this.buffer.length < total) return;
    const body = this.buffer.toString('utf8', end + 4, total);
    this.buffer = this.buffer.subarray(total);
    const p = this.pending;
    this.pending = null;
    p?.resolve({ status: Number(head.slice(9, 12)), body, ms: performance.now() - p.start });
  }

  private fail(err: Error): void {
    const p = this.pending;
    this.pending = null;
    p?.reject(err);
  }
}
