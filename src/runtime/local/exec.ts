/**
 * Running a command inside a machine: join its cgroups on the host, nsenter
 * the namespaces of its init (found by the pid recorded at boot, so this works
 * after a controlplane restart too), then a tiny launcher on the runtime's
 * own busybox sets cwd and env, resolves the executable and execs it.
 *
 * The launcher reports on fd 3 whether the command started, or why not
 * (missing executable, bad cwd), before exec: a command's own exit status is
 * never confused with a failure to start it.
 *
 * The user's env is applied only inside the sandbox (busybox env -i): host
 * tools running as host root never see it (no LD_PRELOAD games).
 */
import { spawn } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import type { Readable, Writable } from 'node:stream';
import type { ExecHandle, ExecRequest, ExecResult, OutputListener } from '../runtime.js';
import { killQuietly } from './proc.js';
import { DEFAULT_PATH, SANDBOX_BUSYBOX } from './sandbox.js';

/** After the process exits, how long its output pipes may take to drain (a background child may hold them). */
const STDIO_DRAIN_MS = 250;
export const DEFAULT_CWD = '/root';
/** Raises exec'd workloads above everything else on the host for the OOM killer. */
const WORKLOAD_OOM_SCORE_ADJ = 500;

export interface ExecTools {
  readonly sh: string;
  readonly nsenter: string;
}

export interface ExecTarget {
  readonly initPid: number;
  readonly cgroupProcs: readonly string[];
}

const HOST_WRAPPER = [
  'for f in $HANGAR_CGROUP_PROCS; do echo $$ 2>/dev/null > "$f" || { echo SANDBOX_UNAVAILABLE >&3; exit 111; }; done',
  'unset HANGAR_CGROUP_PROCS',
  // Past its memory limit (or in a host-wide OOM) a machine's workload goes first, not the host's processes.
  `echo ${WORKLOAD_OOM_SCORE_ADJ} 2>/dev/null > /proc/self/oom_score_adj || true`,
  'exec "$@"',
].join('\n');

/** Runs inside the sandbox, under the user's env: $1 = cwd, $2.. = argv. */
const LAUNCHER = [
  'cd -- "$1" 2>/dev/null || { echo CWD_NOT_FOUND >&3; exit 126; }',
  'shift',
  '__h_prog=$1',
  '__h_exe=',
  'case $__h_prog in',
  '  */*) __h_exe=$__h_prog ;;',
  '  *)',
  '    __h_oifs=$IFS; IFS=:; set -f',
  `    for __h_d in \${PATH:-${DEFAULT_PATH}}; do`,
  '      [ -n "$__h_d" ] || __h_d=.',
  '      if [ -f "$__h_d/$__h_prog" ] && [ -x "$__h_d/$__h_prog" ]; then __h_exe=$__h_d/$__h_prog; break; fi',
  '    done',
  '    set +f; IFS=$__h_oifs ;;',
  'esac',
  'if [ -z "$__h_prog" ] || [ -z "$__h_exe" ] || [ ! -e "$__h_exe" ]; then echo EXECUTABLE_NOT_FOUND >&3; exit 127; fi',
  'if [ -d "$__h_exe" ] || [ ! -x "$__h_exe" ]; then echo PERMISSION_DENIED >&3; exit 126; fi',
  'echo STARTED >&3',
  'exec 3>&-',
  'shift',
  // The resolved path, not the name: busybox ash would otherwise prefer its own applets.
  'exec -a "$__h_prog" "$__h_exe" "$@"',
].join('\n');

function startErrorMessage(code: string, req: ExecRequest, cwd: string): string {
  switch (code) {
    case 'CWD_NOT_FOUND':
      return `working directory ${cwd} does not exist in the machine (or is not a directory)`;
    case 'EXECUTABLE_NOT_FOUND':
      return `${req.argv[0] ?? ''}: executable not found`;
    case 'PERMISSION_DENIED':
      return `${req.argv[0] ?? ''}: not an executable file`;
    case 'INVALID_ENV':
      return 'environment variable names must be non-empty and contain no "=" or NUL';
    default:
      return 'could not enter the machine (is it still running?)';
  }
}

function invalidRequest(req: ExecRequest): string | null {
  if (req.argv.length === 0 || req.argv[0] === '') return 'EXECUTABLE_NOT_FOUND';
  for (const [k, v] of Object.entries(req.env ?? {})) {
    if (k === '' || k.includes('=') || k.includes('\0') || v.includes('\0')) return 'INVALID_ENV';
  }
  return null;
}

function settled(result: ExecResult): ExecHandle {
  return { done: Promise.resolve(result), kill: () => undefined };
}

function signalNumber(name: NodeJS.Signals | null): number | null {
  if (name === null) return null;
  return (osConstants.signals as Record<string, number | undefined>)[name] ?? null;
}

export function startExec(tools: ExecTools, target: ExecTarget, req: ExecRequest, onOutput: OutputListener): ExecHandle {
  const cwd = req.cwd ?? DEFAULT_CWD;
  const bad = invalidRequest(req);
  if (bad !== null) {
    return settled({ exitCode: null, signal: null, timedOut: false, startError: { code: bad, message: startErrorMessage(bad, req, cwd) } });
  }
  const env = { PATH: DEFAULT_PATH, HOME: '/root', ...req.env };
  const child = spawn(
    tools.sh,
    [
      '-c', HOST_WRAPPER, 'hangar-exec',
      tools.nsenter, '-t', String(target.initPid), '-U', '-m', '-u', '-i', '-n', '-p', '-C', '--root', '--wd', '--',
      SANDBOX_BUSYBOX, 'env', '-i', ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
      SANDBOX_BUSYBOX, 'sh', '-c', LAUNCHER, 'hangar-launch', cwd, ...req.argv,
    ],
    {
      // Own process group: kill() and the timeout take the whole tree.
      detached: true,
      stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
      env: { PATH: DEFAULT_PATH, HANGAR_CGROUP_PROCS: target.cgroupProcs.join(' ') },
    },
  );
  const stdin = child.stdin as Writable;
  const stdout = child.stdout as Readable;
  const stderr = child.stderr as Readable;
  const status = child.stdio[3] as Readable;
  let statusText = '';
  let exited = false;
  let killed = false;
  let timedOut = false;

  const killGroup = (): void => {
    if (exited || child.pid === undefined) return;
    killed = true;
    killQuietly(-child.pid, 'SIGKILL');
  };

  stdin.on('error', () => undefined); // the command may exit without reading its stdin
  if (req.stdin !== undefined && req.stdin !== '') stdin.write(req.stdin);
  stdin.end();
  stdout.on('data', (c: Buffer) => onOutput('stdout', c));
  stderr.on('data', (c: Buffer) => onOutput('stderr', c));
  status.on('data', (c: Buffer) => {
    statusText += c.toString();
  });

  const done = new Promise<ExecResult>((resolve) => {
    const timer =
      req.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            killGroup();
          }, req.timeoutMs);
    child.on('error', (e) => {
      exited = true;
      if (timer !== undefined) clearTimeout(timer);
      resolve({ exitCode: null, signal: null, timedOut: false, startError: { code: 'SPAWN_FAILED', message: e.message } });
    });
    child.on('exit', (code, signal) => {
      exited = true;
      if (timer !== undefined) clearTimeout(timer);
      const streams = [stdout, stderr, status];
      const drained = Promise.all(streams.map((s) => new Promise<void>((r) => (s.readableEnded || s.destroyed ? r() : s.once('close', () => r())))));
      const grace = new Promise<void>((r) => setTimeout(r, STDIO_DRAIN_MS).unref());
      void Promise.race([drained, grace]).then(() => {
        for (const s of streams) s.destroy();
        const lines = statusText.split('\n').filter(Boolean);
        const startCode = lines.find((l) => l !== 'STARTED');
        // Killed before the launcher reported (our kill, a destroy, the OOM killer): a signal, not a start error.
        if (lines.includes('STARTED') || (startCode === undefined && (killed || signal !== null))) {
          resolve({ exitCode: code, signal: signalNumber(signal), timedOut });
          return;
        }
        const errCode = startCode ?? 'SANDBOX_UNAVAILABLE';
        resolve({ exitCode: null, signal: null, timedOut, startError: { code: errCode, message: startErrorMessage(errCode, req, cwd) } });
      });
    });
  });

  return { done, kill: killGroup };
}
