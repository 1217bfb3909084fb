/**
 * Booting one sandbox: a detached process chain that outlives the controlplane
 *
 *   sh (joins the machine's cgroups, then execs)
 *     unshare --map-users/--map-groups --setuid 0   new user namespace: root
 *                                                   inside is an unprivileged
 *                                                   subordinate uid outside
 *       bwrap (the "monitor", host pid namespace)   new pid, mount, uts, ipc,
 *                                                   net, cgroup namespaces;
 *                                                   pivots into the rootfs
 *         bwrap reaper = pid 1 in the sandbox       ("init": its namespaces are
 *                                                   the ones exec enters)
 *           busybox sleep                           the idle workload
 *
 * The chain runs in its own session with no pipe back to us once booted, so
 * it survives the controlplane; what we need to find it again (pids and their
 * start times) is recorded in the machine directory.
 *
 * A claimable boot (the warm pool) differs in one thing: its idle workload
 * first waits on a pipe for the name of the machine it becomes, sets it as its
 * hostname and acknowledges, and only then drops the pipe. If the controlplane
 * dies first the pipe reads EOF and the unclaimed sandbox exits by itself.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { identify, killQuietly, type ProcIdentity } from './proc.js';

/** Booting normally takes ~10 ms; past this something is wrong (host overloaded, tool hanging). */
const BOOT_DEADLINE_MS = 15_000;
/** Longest hostname the kernel takes. */
const MAX_HOSTNAME = 64;
/** Where the runtime's own static busybox appears inside every sandbox. */
export const SANDBOX_BUSYBOX = '/.hangar/busybox';
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const READY_TOKEN = 'hangar-ready';
const CLAIMED_TOKEN = 'hangar-claimed';
/** Taking a name is a pipe round trip and one `hostname`: normally a millisecond or two. */
const CLAIM_DEADLINE_MS = 5_000;
/** How much of the console log to quote when a boot fails. */
const CONSOLE_TAIL_BYTES = 2_000;

export interface SandboxTools {
  readonly sh: string;
  readonly unshare: string;
  readonly bwrap: string;
}

export interface IdRange {
  readonly start: number;
  readonly count: number;
}

export interface BootRecord {
  /** The outer bwrap, in the host's pid namespace. */
  readonly monitor: ProcIdentity;
  /** pid 1 of the sandbox: the namespaces exec joins. */
  readonly init: ProcIdentity;
  readonly bootedAt: number;
}

export interface BootOptions {
  /** The sandbox's hostname: the machine id, or a placeholder for a pool entry until it is claimed. */
  readonly hostname: string;
  /** Host path of the machine's root filesystem (the overlay mount). */
  readonly rootfs: string;
  /** Host path of the static busybox bound at SANDBOX_BUSYBOX. */
  readonly busybox: string;
  readonly cgroupProcs: readonly string[];
  readonly cgroupVisible: readonly { host: string; inside: string }[];
  readonly ids: IdRange;
  readonly consoleLog: string;
}

/** Joins the cgroups before anything else runs, so every descendant is accounted and limited. */
const BOOT_WRAPPER = [
  'for f in $HANGAR_CGROUP_PROCS; do echo $$ > "$f" || exit 111; done',
  'unset HANGAR_CGROUP_PROCS',
  // The OOM killer should take a machine's workloads, never its plumbing. Best effort:
  // some hosts refuse negative values (EIO); exec'd workloads are also raised (exec.ts).
  'echo -1000 2>/dev/null > /proc/self/oom_score_adj || true',
  'exec "$@"',
].join('\n');

/**
 * pid 2 of the sandbox: tells us it is up (so its mounts are in place), then
 * idles. It keeps the wrapper's OOM protection: if it died the machine would.
 */
const INIT_SCRIPT = [
  `echo ${READY_TOKEN} >&4`,
  'exec 3>&- 4>&- 5<&- >/dev/null 2>&1 </dev/null',
  `exec ${SANDBOX_BUSYBOX} sleep inf`,
].join('\n');

/**
 * pid 2 of a pool entry: up, then waits on fd 6 for its machine's name. EOF
 * means the controlplane that prepared it is gone: exiting takes the whole
 * sandbox down, so a killed controlplane leaves no live pool sandboxes.
 */
const CLAIMABLE_INIT_SCRIPT = [
  `echo ${READY_TOKEN} >&4`,
  'read -r name <&6 || exit 0',
  `${SANDBOX_BUSYBOX} hostname "$name" || exit 1`,
  `echo ${CLAIMED_TOKEN} >&4`,
  'exec 3>&- 4>&- 5<&- 6<&- >/dev/null 2>&1 </dev/null',
  `exec ${SANDBOX_BUSYBOX} sleep inf`,
].join('\n');

function bwrapArgs(o: BootOptions): string[] {
  const args = [
    '--unshare-pid', '--unshare-net', '--unshare-ipc', '--unshare-uts', '--unshare-cgroup',
    '--new-session',
    '--hostname', o.hostname.slice(0, MAX_HOSTNAME),
    '--bind', o.rootfs, '/',
    '--proc', '/proc',
    '--dev', '/dev',
    '--tmpfs', '/sys',
  ];
  for (const v of o.cgroupVisible) args.push('--ro-bind', v.host, v.inside);
  args.push(
    '--remount-ro', '/sys',
    '--ro-bind', o.busybox, SANDBOX_BUSYBOX,
    '--chdir', '/root',
    '--clearenv', '--setenv', 'PATH', DEFAULT_PATH, '--setenv', 'HOME', '/root', '--setenv', 'HOSTNAME', o.hostname.slice(0, MAX_HOSTNAME),
    '--info-fd', '3',
  );
  return args;
}

export class BootError extends Error {}

/** Our end of a pool entry's naming pipe. */
export interface ClaimChannel {
  /** Gives the sandbox its machine's name (hostname); resolves once its init has taken it. */
  claim(hostname: string): Promise<void>;
  /** Drops our end without claiming: the sandbox then exits by itself. */
  close(): void;
}

export interface Booted {
  readonly record: BootRecord;
  readonly child: ChildProcess;
}

/** Boots the sandbox and resolves once its init runs inside the finished namespaces. */
export async function boot(tools: SandboxTools, o: BootOptions): Promise<Booted> {
  const { record, child, ready } = await spawnChain(tools, o, INIT_SCRIPT, false);
  ready.destroy();
  return { record, child };
}

/** Boots a sandbox that waits to be named: a warm pool entry. */
export async function bootClaimable(tools: SandboxTools, o: BootOptions): Promise<Booted & { channel: ClaimChannel }> {
  const { record, child, ready, namePipe } = await spawnChain(tools, o, CLAIMABLE_INIT_SCRIPT, true);
  if (namePipe === null) throw new BootError('no naming pipe'); // spawnChain always makes one when asked
  return { record, child, channel: claimChannel(ready, namePipe) };
}

function claimChannel(ready: Readable, namePipe: Writable): ClaimChannel {
  let used = false;
  const close = () => {
    ready.destroy();
    namePipe.destroy();
  };
  return {
    close,
    claim(hostname) {
      if (used) return Promise.reject(new BootError('pool sandbox already claimed'));
      used = true;
      if (ready.destroyed || ready.readableEnded) return Promise.reject(new BootError('pool sandbox has exited'));
      return new Promise<void>((resolve, reject) => {
        let text = '';
        const done = (err?: Error) => {
          clearTimeout(timer);
          close();
          if (err === undefined) resolve();
          else reject(err);
        };
        const timer = setTimeout(() => done(new BootError(`pool sandbox did not take its name within ${CLAIM_DEADLINE_MS} ms`)), CLAIM_DEADLINE_MS);
        ready.on('data', (c: Buffer) => {
          text += c.toString();
          if (text.includes(CLAIMED_TOKEN)) done();
        });
        ready.once('close', () => done(new BootError('pool sandbox exited before taking its name')));
        namePipe.write(`${hostname.slice(0, MAX_HOSTNAME)}\n`);
      });
    },
  };
}

/** Keeps node's event loop free of a pipe that may stay open for the life of a pool entry. */
function unrefStream(s: Readable | Writable): void {
  (s as Partial<Socket>).unref?.();
}

async function spawnChain(
  tools: SandboxTools,
  o: BootOptions,
  initScript: string,
  withNamePipe: boolean,
): Promise<Booted & { ready: Readable; namePipe: Writable | null }> {
  const consoleFd = openSync(o.consoleLog, 'a');
  let child: ChildProcess;
  try {
    child = spawn(
      tools.sh,
      [
        '-c', BOOT_WRAPPER, 'hangar-boot',
        tools.unshare,
        `--map-users=${o.ids.start},0,${o.ids.count}`,
        `--map-groups=${o.ids.start},0,${o.ids.count}`,
        '--setuid', '0', '--setgid', '0',
        '--',
        // Arguments over a pipe: the sandbox's pid 1 shows no host paths in its command line.
        tools.bwrap, '--args', '5', SANDBOX_BUSYBOX, 'sh', '-c', initScript,
      ],
      {
        detached: true,
        stdio: ['ignore', consoleFd, consoleFd, 'pipe', 'pipe', 'pipe', withNamePipe ? 'pipe' : 'ignore'],
        env: { PATH: DEFAULT_PATH, HANGAR_CGROUP_PROCS: o.cgroupProcs.join(' ') },
      },
    );
  } finally {
    closeSync(consoleFd);
  }
  const stdio = child.stdio as unknown as (Readable | Writable | null)[]; // node types only know 5 stdio slots
  const info = stdio[3] as Readable;
  const ready = stdio[4] as Readable;
  const argsPipe = stdio[5] as Writable;
  const namePipe = withNamePipe ? (stdio[6] as Writable) : null;
  argsPipe.on('error', () => undefined); // bwrap died early: reported by the exit below
  ready.on('error', () => undefined); // likewise; a pool entry's death is seen through its exit
  namePipe?.on('error', () => undefined); // the sandbox died: the claim reports it
  argsPipe.end(Buffer.from(bwrapArgs(o).map((a) => `${a}\0`).join('')));
  try {
    const initPid = await new Promise<number>((resolve, reject) => {
      let infoText = '';
      let readyText = '';
      let initPid: number | null = null;
      let isReady = false;
      const timer = setTimeout(() => reject(new BootError(`sandbox did not come up within ${BOOT_DEADLINE_MS} ms`)), BOOT_DEADLINE_MS);
      const settle = () => {
        if (initPid !== null && isReady) {
          clearTimeout(timer);
          resolve(initPid);
        }
      };
      info.on('data', (c: Buffer) => {
        infoText += c.toString();
        const m = /"child-pid"\s*:\s*(\d+)/.exec(infoText);
        if (m !== null) initPid = Number(m[1]);
        settle();
      });
      ready.on('data', (c: Buffer) => {
        readyText += c.toString();
        if (readyText.includes(READY_TOKEN)) isReady = true;
        settle();
      });
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(new BootError(`cannot start the sandbox: ${e.message}`));
      });
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        void consoleTail(o.consoleLog).then((tail) =>
          reject(new BootError(`sandbox exited while booting (${code ?? signal})${tail ? `: ${tail}` : ''}`)),
        );
      });
    });
    const pid = child.pid;
    const monitor = pid === undefined ? null : await identify(pid);
    const init = await identify(initPid);
    if (monitor === null || init === null) throw new BootError('sandbox exited right after booting');
    child.removeAllListeners('exit');
    child.removeAllListeners('error');
    ready.removeAllListeners('data');
    child.unref();
    unrefStream(ready);
    if (namePipe !== null) unrefStream(namePipe);
    return { record: { monitor, init, bootedAt: Date.now() }, child, ready, namePipe };
  } catch (e) {
    if (child.pid !== undefined) killQuietly(-child.pid);
    ready.destroy();
    namePipe?.destroy();
    throw e;
  } finally {
    info.destroy();
  }
}

async function consoleTail(path: string): Promise<string> {
  try {
    const text = await readFile(path, 'utf8');
    return text.slice(-CONSOLE_TAIL_BYTES).trim();
  } catch {
    return '';
  }
}
