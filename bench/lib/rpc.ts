/**
 * A tiny request/response protocol over the IPC channel of a forked child
 * (advanced serialization, so typed arrays travel cheaply).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { stopChild, track } from './server.js';

interface Call {
  readonly rpc: number;
  readonly method: string;
  readonly params: unknown;
}
interface Reply {
  readonly rpc: number;
  readonly result?: unknown;
  readonly error?: string;
}

export class Worker {
  private next = 1;
  private readonly waiting = new Map<number, { ok: (v: unknown) => void; fail: (e: Error) => void }>();
  readonly child: ChildProcess;

  constructor(modulePath: string, args: readonly string[] = []) {
    this.child = fork(modulePath, [...args], { serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    track(this.child);
    this.child.on('message', (m: Reply) => {
      const w = this.waiting.get(m.rpc);
      if (w === undefined) return;
      this.waiting.delete(m.rpc);
      if (m.error !== undefined) w.fail(new Error(m.error));
      else w.ok(m.result);
    });
    this.child.on('exit', (code, signal) => {
      for (const w of this.waiting.values()) w.fail(new Error(`worker exited (${code ?? signal})`));
      this.waiting.clear();
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  call<T>(method: string, params: unknown): Promise<T> {
    const rpc = this.next++;
    return new Promise<T>((ok, fail) => {
      this.waiting.set(rpc, { ok: ok as (v: unknown) => void, fail });
      this.child.send({ rpc, method, params } satisfies Call);
    });
  }

  stop(): Promise<void> {
    return stopChild(this.child, 2000);
  }
}

/** In the child: serves calls with `handlers`; exits when the parent goes away. */
export function serveRpc(handlers: Record<string, (params: never) => Promise<unknown> | unknown>): void {
  process.on('message', (m: Call) => {
    const handler = handlers[m.method];
    const reply = (r: Omit<Reply, 'rpc'>) => process.send?.({ rpc: m.rpc, ...r });
    if (handler === undefined) return reply({ error: `no method ${m.method}` });
    Promise.resolve()
      .then(() => handler(m.params as never))
      .then(
        (result) => reply({ result }),
        (err: unknown) => reply({ error: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
      );
  });
  process.on('disconnect', () => process.exit(0));
}
