/**
 * `hangar machines exec <id> [--cwd d] [--env K=V ...] [--timeout-ms n]
 * [--stdin-file f] -- <argv...>`: creates an execution, prints its stdout and
 * stderr as they come (following the events endpoint with its cursor), and
 * exits with the command's exit code: 124 when it timed out, 125 when it could
 * not start or the API failed, 128+n when killed by signal n.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import type { ExecutionEventWire, ExecutionResponse } from '../domain/executions.js';
import type { ConnectionOptions } from './client.js';
import { ApiCallError, HangarClient, resolveConfig, UsageError } from './client.js';
import { formatError } from './format.js';

export const EXEC_EXIT = { timeout: 124, failed: 125 } as const;
/** Between polls of the events endpoint: quick enough to feel live, light on the server. */
const POLL_MS = 150;

interface ExecOptions extends ConnectionOptions {
  cwd?: string;
  env?: string[];
  timeoutMs?: number;
  stdinFile?: string;
}

const PAGE = 500;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function collectEnv(value: string, previous: string[] = []): string[] {
  if (!/^[^=]+=/.test(value)) throw new InvalidArgumentError('must be NAME=VALUE');
  return [...previous, value];
}

function parsePositive(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive whole number of milliseconds');
  return n;
}

async function readPipedStdin(): Promise<string | undefined> {
  // A terminal is not input: only piped or redirected stdin is sent.
  if (process.stdin.isTTY) return undefined;
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return chunks.length === 0 ? undefined : Buffer.concat(chunks).toString('utf8');
}

function requestBody(argv: string[], o: ExecOptions, stdin: string | undefined): Record<string, unknown> {
  const body: Record<string, unknown> = { command: argv };
  if (o.cwd !== undefined) body['cwd'] = o.cwd;
  if (o.env !== undefined && o.env.length > 0) {
    body['env'] = Object.fromEntries(o.env.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  }
  if (o.timeoutMs !== undefined) body['timeout_ms'] = o.timeoutMs;
  if (stdin !== undefined) body['stdin'] = stdin;
  return body;
}

/** What the shell should see, from the execution's end. */
export function exitCodeOf(e: Pick<ExecutionResponse, 'status' | 'exit_code' | 'signal' | 'error_code'>): number {
  if (e.error_code === 'EXECUTION_TIMEOUT') return EXEC_EXIT.timeout;
  if (e.exit_code !== undefined) return e.exit_code;
  if (e.signal !== undefined) return 128 + e.signal;
  return e.status === 'succeeded' ? 0 : EXEC_EXIT.failed;
}

async function follow(client: HangarClient, machineId: string, executionId: string): Promise<ExecutionEventWire | undefined> {
  const base = `/v1/machines/${encodeURIComponent(machineId)}/executions/${encodeURIComponent(executionId)}/events`;
  let cursor: string | undefined;
  let last: ExecutionEventWire | undefined;
  for (;;) {
    const qs = cursor === undefined ? `?limit=${PAGE}` : `?limit=${PAGE}&cursor=${encodeURIComponent(cursor)}`;
    const { body } = await client.request<{ items: ExecutionEventWire[] | null; next_cursor?: string }>('GET', base + qs);
    for (const ev of body.items ?? []) {
      if (ev.type === 'stdout' && ev.chunk !== undefined) process.stdout.write(ev.chunk);
      else if (ev.type === 'stderr' && ev.chunk !== undefined) process.stderr.write(ev.chunk);
      else if (ev.type === 'lifecycle') last = ev;
    }
    // No cursor: the execution has ended and every event was read.
    if (body.next_cursor === undefined) return last;
    cursor = body.next_cursor;
    // A full page: more are waiting now. Otherwise wait for the command to say more.
    if ((body.items ?? []).length < PAGE) await sleep(POLL_MS);
  }
}

export function registerExecCommand(machines: Command, common: (c: Command) => Command): void {
  common(machines.command('exec').description('run a command in a machine (argv after --, no shell) and print its output').argument('<machine_id>').argument('<argv...>'))
    .option('--cwd <dir>', 'working directory inside the machine')
    .option('--env <NAME=VALUE>', 'environment variable (repeatable)', collectEnv)
    .option('--timeout-ms <n>', 'kill the command after this many milliseconds', parsePositive)
    .option('--stdin-file <file>', "send this file as the command's stdin (default: piped stdin, if any)")
    .action(async (machineId: string, argv: string[], o: ExecOptions) => {
      process.exitCode = await execCommand(machineId, argv, o);
    });
}

async function execCommand(machineId: string, argv: string[], o: ExecOptions): Promise<number> {
  try {
    const client = new HangarClient(resolveConfig(o));
    const stdin = o.stdinFile !== undefined ? readFileSync(o.stdinFile, 'utf8') : await readPipedStdin();
    const path = `/v1/machines/${encodeURIComponent(machineId)}/executions`;
    const { body: created } = await client.request<ExecutionResponse>('POST', path, { body: requestBody(argv, o, stdin) });
    if (created.status === 'wake_in_progress') process.stderr.write(`waking ${machineId}...\n`);
    await follow(client, machineId, created.execution_id);
    const { body: final } = await client.request<ExecutionResponse>('GET', `${path}/${encodeURIComponent(created.execution_id)}`);
    if (final.stdout_truncated === true || final.stderr_truncated === true) {
      process.stderr.write(`note: output was truncated (stdout ${final.stdout_bytes ?? 0} bytes, stderr ${final.stderr_bytes ?? 0} bytes in all)\n`);
    }
    if (final.error_code !== undefined) process.stderr.write(`hangar: ${final.error_code}${final.error_message !== undefined ? `: ${final.error_message}` : ''}\n`);
    else if (final.status !== 'succeeded' && final.exit_code === undefined) process.stderr.write(`hangar: execution ${final.status}\n`);
    return exitCodeOf(final);
  } catch (e) {
    if (e instanceof ApiCallError) process.stderr.write(formatError(e.body));
    else if (e instanceof UsageError) process.stderr.write(`error: ${e.message}\n`);
    else process.stderr.write(`error: ${e instanceof Error ? e.message : String(e)}\n`);
    return EXEC_EXIT.failed;
  }
}
