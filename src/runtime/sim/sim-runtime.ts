/**
 * The simulated runtime: hosts with capacity, a latency per operation, and
 * injected faults. It stands in for hardware in tests and benchmarks at scale;
 * everything above it (store, reconciler, API) is the real code.
 *
 * Its "hardware" outlives the controlplane: after a restart `recover` puts
 * back the sandboxes the store knows, as real hosts would still have them.
 */
import type { Host } from '../../domain/placement.js';
import type { Sizes } from '../../domain/types.js';
import type { ExecHandle, ExecRequest, ExecResult, ExecRuntime, Observation, OutputListener, Runtime, SandboxSpec } from '../runtime.js';
import { RuntimeError } from '../runtime.js';

export interface SimHostSpec {
  readonly hostId: string;
  readonly capacity: Sizes;
}

export interface SimFaults {
  /** Probability (0..1) that an operation fails. */
  readonly failureRate: number;
  /** Whether injected failures are retryable. */
  readonly retryable: boolean;
  /** Probability (0..1) that an operation loses its whole host. */
  readonly hostLossRate: number;
}

export interface SimRuntimeOptions {
  readonly hosts: readonly SimHostSpec[];
  readonly latencyMs: number;
  readonly faults?: SimFaults;
  readonly random?: () => number;
}

interface SimSandbox {
  hostId: string;
  state: 'running' | 'sleeping';
  sizes: Sizes;
}

export const NO_FAULTS: SimFaults = { failureRate: 0, retryable: true, hostLossRate: 0 };

export class SimRuntime implements Runtime, ExecRuntime {
  readonly kind = 'sim';
  private readonly hostSpecs: SimHostSpec[];
  private readonly lostHosts = new Set<string>();
  private readonly sandboxes = new Map<string, SimSandbox>();
  private readonly latencyMs: number;
  private faults: SimFaults;
  private readonly random: () => number;
  private readonly exitListeners: ((machineId: string) => void)[] = [];
  /** Operations performed, for tests that assert what the reconciler asked for. */
  readonly calls: { op: string; machineId: string }[] = [];

  constructor(opts: SimRuntimeOptions) {
    this.hostSpecs = [...opts.hosts];
    this.latencyMs = opts.latencyMs;
    this.faults = opts.faults ?? NO_FAULTS;
    this.random = opts.random ?? Math.random;
  }

  setFaults(faults: SimFaults): void {
    this.faults = faults;
  }

  /** Loses a host and every sandbox on it, as a hardware failure would. */
  loseHost(hostId: string): void {
    this.lostHosts.add(hostId);
    for (const [id, sb] of this.sandboxes) {
      if (sb.hostId !== hostId) continue;
      this.sandboxes.delete(id);
      for (const l of this.exitListeners) l(id);
    }
  }

  /** Brings a lost host back, empty. */
  restoreHost(hostId: string): void {
    this.lostHosts.delete(hostId);
  }

  /** Kills one sandbox, as if its processes died. */
  killSandbox(machineId: string): void {
    if (this.sandboxes.delete(machineId)) for (const l of this.exitListeners) l(machineId);
  }

  sandboxState(machineId: string): SimSandbox | undefined {
    const sb = this.sandboxes.get(machineId);
    return sb === undefined ? undefined : { ...sb };
  }

  async hosts(): Promise<Host[]> {
    return this.hostSpecs.map((h) => ({ hostId: h.hostId, capacity: h.capacity, ready: !this.lostHosts.has(h.hostId) }));
  }

  async start(spec: SandboxSpec): Promise<void> {
    await this.operate('start', spec.machineId, spec.hostId);
    const existing = this.sandboxes.get(spec.machineId);
    if (existing !== undefined && existing.hostId !== spec.hostId) this.sandboxes.delete(spec.machineId);
    this.sandboxes.set(spec.machineId, { hostId: spec.hostId, state: 'running', sizes: spec.sizes });
  }

  async stop(machineId: string): Promise<void> {
    const sb = this.sandboxes.get(machineId);
    await this.operate('stop', machineId, sb?.hostId);
    if (sb === undefined) throw new RuntimeError('sandbox not found', { retryable: true, reason: 'SandboxLost' });
    sb.state = 'sleeping';
  }

  async resize(spec: SandboxSpec): Promise<void> {
    const sb = this.sandboxes.get(spec.machineId);
    await this.operate('resize', spec.machineId, sb?.hostId);
    if (sb === undefined) throw new RuntimeError('sandbox not found', { retryable: true, reason: 'SandboxLost' });
    sb.sizes = spec.sizes;
  }

  async destroy(machineId: string): Promise<void> {
    const sb = this.sandboxes.get(machineId);
    // A sandbox on a lost host is gone with it: destroying it cannot fail.
    if (sb !== undefined && !this.lostHosts.has(sb.hostId)) await this.operate('destroy', machineId, sb.hostId);
    else this.calls.push({ op: 'destroy', machineId });
    this.sandboxes.delete(machineId);
  }

  async inspect(machineId: string, hostId: string): Promise<Observation> {
    const sb = this.sandboxes.get(machineId);
    const hostGone = this.lostHosts.has(hostId) || !this.hostSpecs.some((h) => h.hostId === hostId);
    if (sb === undefined) return { state: 'absent', hostGone };
    return { state: sb.state, hostGone };
  }

  async recover(expected: readonly { machineId: string; hostId: string; state: 'running' | 'sleeping'; sizes: Sizes }[]): Promise<void> {
    for (const e of expected) {
      if (this.sandboxes.has(e.machineId) || this.lostHosts.has(e.hostId)) continue;
      this.sandboxes.set(e.machineId, { hostId: e.hostId, state: e.state, sizes: e.sizes });
    }
  }

  onSandboxExit(listener: (machineId: string) => void): void {
    this.exitListeners.push(listener);
  }

  async close(): Promise<void> {
    this.sandboxes.clear();
  }

  /** Commands in a running sandbox: a few built-ins (see simExec), so API tests run anywhere, fast. */
  async exec(machineId: string, req: ExecRequest, onOutput: OutputListener): Promise<ExecHandle> {
    const sb = this.sandboxes.get(machineId);
    if (sb === undefined || sb.state !== 'running') {
      throw new RuntimeError(`machine ${machineId} is not running`, { retryable: false, reason: 'MachineNotRunning' });
    }
    return simExec(req, onOutput);
  }

  private async operate(op: string, machineId: string, hostId: string | undefined): Promise<void> {
    this.calls.push({ op, machineId });
    if (this.latencyMs > 0) await new Promise((r) => setTimeout(r, this.latencyMs));
    if (hostId !== undefined && this.lostHosts.has(hostId)) {
      throw new RuntimeError(`host ${hostId} is unreachable`, { retryable: true, reason: 'HostLost' });
    }
    if (hostId !== undefined && this.faults.hostLossRate > 0 && this.random() < this.faults.hostLossRate) {
      this.loseHost(hostId);
      throw new RuntimeError(`host ${hostId} was lost during ${op}`, { retryable: true, reason: 'HostLost' });
    }
    if (this.faults.failureRate > 0 && this.random() < this.faults.failureRate) {
      throw new RuntimeError(`injected ${op} failure`, { retryable: this.faults.retryable });
    }
  }
}

/**
 * Parses `HANGAR_SIM_HOSTS`: `<count>x<vcpu>/<memory_mib>/<storage_gib>`,
 * several joined by commas (`2x8/16384/200,1x2/2048/20`).
 */
export function parseSimHosts(text: string): SimHostSpec[] {
  const hosts: SimHostSpec[] = [];
  for (const part of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = /^(\d+)x(\d+(?:\.\d+)?)\/(\d+)\/(\d+)$/.exec(part);
    if (m === null) throw new Error(`HANGAR_SIM_HOSTS: "${part}" is not <count>x<vcpu>/<memory_mib>/<storage_gib>`);
    const count = Number(m[1]);
    for (let i = 0; i < count; i++) {
      hosts.push({
        hostId: `sim-${hosts.length}`,
        capacity: { vcpu: Number(m[2]), memoryMib: Number(m[3]), storageGib: Number(m[4]) },
      });
    }
  }
  if (hosts.length === 0) throw new Error('HANGAR_SIM_HOSTS: at least one host is needed');
  return hosts;
}

const SIGKILL = 9;

/**
 * The simulated command set: `echo args...`, `cat` (stdin to stdout), `true`,
 * `false` (exit 1), `sleep <seconds>`. No shell; anything else is a missing
 * executable. Output and exit come asynchronously, as from a real process;
 * kill() and the timeout end it with SIGKILL.
 */
function simExec(req: ExecRequest, onOutput: OutputListener): ExecHandle {
  const [prog, ...args] = req.argv;
  let settle: (r: ExecResult) => void = () => undefined;
  const done = new Promise<ExecResult>((r) => (settle = r));
  let finished = false;
  let sleeper: NodeJS.Timeout | undefined;
  const end = (r: ExecResult): void => {
    if (finished) return;
    finished = true;
    clearTimeout(timeout);
    clearTimeout(sleeper);
    settle(r);
  };
  const exit = (exitCode: number) => end({ exitCode, signal: null, timedOut: false });
  const killed = (timedOut: boolean) => end({ exitCode: null, signal: SIGKILL, timedOut });
  const timeout = req.timeoutMs === undefined ? undefined : setTimeout(() => killed(true), req.timeoutMs);
  setImmediate(() => {
    if (finished) return;
    switch (prog) {
      case 'echo':
        onOutput('stdout', Buffer.from(`${args.join(' ')}\n`));
        return exit(0);
      case 'cat':
        if (req.stdin !== undefined && req.stdin !== '') onOutput('stdout', Buffer.from(req.stdin));
        return exit(0);
      case 'true':
        return exit(0);
      case 'false':
        return exit(1);
      case 'sleep': {
        const seconds = Number(args[0]);
        if (args[0] === undefined || !Number.isFinite(seconds) || seconds < 0) {
          onOutput('stderr', Buffer.from(`sleep: invalid time interval '${args[0] ?? ''}'\n`));
          return exit(1);
        }
        sleeper = setTimeout(() => exit(0), seconds * 1000);
        return;
      }
      default:
        return end({ exitCode: null, signal: null, timedOut: false, startError: { code: 'EXECUTABLE_NOT_FOUND', message: `${prog ?? ''}: executable not found` } });
    }
  });
  return { done, kill: () => killed(false) };
}
