/**
 * Small process helpers: running host tools, and telling whether a recorded
 * pid is still the process we started (pids are reused, start times are not).
 */
import { spawn } from 'node:child_process';
import { access, constants as fsConstants, readFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';

/** Where root's tools live on Debian, in case the controlplane's PATH lacks the sbin dirs. */
const TOOL_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

export interface RunResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a host tool to completion; never rejects on a non-zero exit (callers decide). */
export function run(file: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      resolve({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
  });
}

/** Runs a host tool and throws with its stderr when it fails. */
export async function runOk(file: string, args: readonly string[]): Promise<string> {
  const r = await run(file, args);
  if (r.code !== 0) {
    throw new Error(`${file} ${args.join(' ')} failed (${r.code ?? r.signal}): ${r.stderr.trim() || r.stdout.trim()}`);
  }
  return r.stdout;
}

/** Absolute path of a host tool, or null. */
export async function findTool(name: string): Promise<string | null> {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), ...TOOL_DIRS];
  for (const dir of dirs) {
    const p = join(dir, name);
    try {
      await access(p, fsConstants.X_OK);
      return p;
    } catch {
      // not in this directory
    }
  }
  return null;
}

/** A process identity that survives pid reuse: pid plus its start time (clock ticks since boot). */
export interface ProcIdentity {
  readonly pid: number;
  readonly startTime: number;
}

interface ProcStat {
  readonly state: string;
  readonly startTime: number;
}

async function readStat(pid: number): Promise<ProcStat | null> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name may contain spaces and parentheses: fields start after the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = rest[0];
  const startTime = Number(rest[19]);
  if (state === undefined || !Number.isFinite(startTime)) return null;
  return { state, startTime };
}

export async function identify(pid: number): Promise<ProcIdentity | null> {
  const st = await readStat(pid);
  return st === null ? null : { pid, startTime: st.startTime };
}

/** True when the process still exists, is the same one, and is not a zombie. */
export async function isAlive(id: ProcIdentity): Promise<boolean> {
  const st = await readStat(id.pid);
  return st !== null && st.startTime === id.startTime && st.state !== 'Z' && st.state !== 'X';
}

export function killQuietly(pid: number, signal: NodeJS.Signals | number = 'SIGKILL'): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns true or `deadlineMs` passes; returns the last answer. */
export async function waitFor(check: () => Promise<boolean> | boolean, deadlineMs: number, intervalMs: number): Promise<boolean> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= until) return false;
    await sleep(intervalMs);
  }
}
