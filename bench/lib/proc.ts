/** Linux process statistics from /proc: resident memory and CPU time of another process. */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

let ticksPerSecond: number | undefined;

function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

/** VmRSS of `pid` in KiB. */
export function rssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (m === null) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

/**
 * utime + stime of `pid` in milliseconds (resolution: one clock tick, usually
 * 10 ms); with `mainThread`, of its main thread alone (a Node process's event
 * loop, without its worker and libuv threads).
 */
export function cpuMs(pid: number, mainThread = false): number {
  const stat = readFileSync(mainThread ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`, 'utf8');
  // Fields after the command name, which is in parentheses and may contain spaces.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state); utime is field 14, stime field 15.
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return ((utime + stime) * 1000) / clockTicks();
}

/** CPU and wall time of a process over an interval. */
export class CpuMeter {
  private readonly startCpu: number;
  private readonly startWall: number;
  constructor(
    private readonly pid: number,
    private readonly mainThread = false,
  ) {
    this.startCpu = cpuMs(pid, mainThread);
    this.startWall = performance.now();
  }
  /** CPU milliseconds used since construction, and the share of one core. */
  read(): { cpuMs: number; wallMs: number; cores: number } {
    const used = cpuMs(this.pid, this.mainThread) - this.startCpu;
    const wall = performance.now() - this.startWall;
    return { cpuMs: used, wallMs: wall, cores: wall > 0 ? used / wall : 0 };
  }
}

/** Direct children of `pid` (from /proc/<pid>/task/<tid>/children), e.g. the replica workers of a node:cluster primary. */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tasks) {
    try {
      for (const s of readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(/\s+/)) if (s !== '') out.push(Number(s));
    } catch {
      // The thread ended meanwhile.
    }
  }
  return [...new Set(out)].sort((a, b) => a - b);
}

/** Number of open file descriptors of `pid` (sockets included); -1 if unreadable. */
export function openFds(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return -1;
  }
}

/** Sum of VmRSS (KiB) over several processes. */
export function sumRssKiB(pids: readonly number[]): number {
  return pids.reduce((a, p) => a + rssKiB(p), 0);
}

/** Sum of utime + stime (ms) over several processes. */
export function sumCpuMs(pids: readonly number[]): number {
  return pids.reduce((a, p) => a + cpuMs(p), 0);
}
