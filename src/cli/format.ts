/** Human-readable output of `hangar machines`: tables, summaries, stream lines, errors. */
import type { ErrorBody, LifecycleResponse, MachineListItem } from './client.js';

/** `300` -> `5m`, `93784` -> `1d2h3m4s`, `0` -> `never`. */
export function formatSeconds(total: number): string {
  if (total === 0) return 'never';
  let rest = total;
  let out = '';
  for (const [unit, size] of [['d', 86_400], ['h', 3_600], ['m', 60], ['s', 1]] as const) {
    const n = Math.floor(rest / size);
    if (n > 0) out += `${n}${unit}`;
    rest -= n * size;
  }
  return out;
}

export function formatTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

export function formatMachineTable(items: readonly MachineListItem[]): string {
  if (items.length === 0) return 'no machines\n';
  return formatTable(
    ['ID', 'PHASE', 'DESIRED', 'VCPU', 'MEMORY', 'STORAGE', 'REVISION'],
    items.map((m) => [m.machine_id, m.status.phase, m.desired_state, String(m.vcpu), `${m.memory_mib} MiB`, `${m.storage_gib} GiB`, m.status.revision]),
  );
}

export function isConverged(m: LifecycleResponse): boolean {
  return m.status.phase === m.desired_state;
}

export function isTerminalFailure(m: LifecycleResponse): boolean {
  return m.status.phase === 'failed' && !m.status.retryable;
}

/** A few aligned lines about one machine. */
export function formatMachine(m: LifecycleResponse): string {
  const rows: [string, string][] = [
    ['machine', m.machine_id],
    ['phase', `${m.status.phase} (${m.status.reason})`],
    ['desired', `${m.desired_state}${isConverged(m) ? '' : ' (converging)'}`],
    ['size', `${m.vcpu} vCPU, ${m.memory_mib} MiB memory, ${m.storage_gib} GiB storage`],
    ['autosleep', formatSeconds(m.autosleep_seconds)],
    ['revision', m.status.revision],
    ['changed', m.status.last_transition_at],
  ];
  if (m.status.last_error !== undefined) rows.push(['error', `${m.status.last_error}${m.status.retryable ? ' (will retry)' : ' (not retryable)'}`]);
  return rows.map(([k, v]) => `${k.padEnd(10)} ${v}`).join('\n') + '\n';
}

/** First line of a mutation's answer, then the machine. */
export function formatMutation(verb: string, status: number, m: LifecycleResponse): string {
  const state = status === 202 ? 'accepted, converging' : 'done';
  return `${verb} ${m.machine_id}: ${state}\n${formatMachine(m)}`;
}

/** One line of `watch`: `  +0.012s  starting  (Placed)  rev 3`. */
export function formatStatusLine(m: LifecycleResponse, sincePreviousMs: number): string {
  const secs = `+${(Math.max(0, sincePreviousMs) / 1000).toFixed(3)}s`;
  let line = `  ${secs.padStart(9)}  ${m.status.phase.padEnd(17)}  (${m.status.reason})  rev ${m.status.revision}`;
  if (m.status.phase !== m.desired_state && m.status.phase !== 'failed') line += `  -> ${m.desired_state}`;
  if (m.status.last_error !== undefined && m.status.phase === 'failed') {
    line += `  error: ${m.status.last_error}${m.status.retryable ? ' (will retry)' : ' (not retryable)'}`;
  }
  return line + '\n';
}

/** `ERROR_CODE: message`, then the details, one per line. */
export function formatError(e: ErrorBody): string {
  let out = `${e.error_code}: ${e.message}\n`;
  for (const [k, v] of Object.entries(e.details ?? {})) out += `  ${k}: ${v}\n`;
  return out;
}
