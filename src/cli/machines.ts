/**
 * `hangar machines create|list|get|update|delete|sleep|wake|watch`: the
 * Machines API over HTTP (client.ts), printed by format.ts, followed by
 * watch.ts. Exit codes: 0 ok, 1 API or connection error, 2 usage error,
 * 3 the machine failed for good (watch, --wait).
 */
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import type { ConnectionOptions, LifecycleResponse, MachineListItem } from './client.js';
import { ApiCallError, HangarClient, resolveConfig, UsageError } from './client.js';
import { registerExecCommand } from './exec.js';
import { formatError, formatMachine, formatMachineTable, formatMutation, formatStatusLine, isConverged } from './format.js';
import type { WatchOutcome } from './watch.js';
import { watchMachine } from './watch.js';

export const EXIT = { ok: 0, api: 1, usage: 2, failed: 3 } as const;

interface CommonOptions extends ConnectionOptions {
  json?: boolean;
}

interface MutationOptions extends CommonOptions {
  ifMatch?: string;
  wait?: boolean;
}

interface SizeOptions {
  vcpu?: number;
  memoryMib?: number;
  storageGib?: number;
  autosleep?: string;
}

const out = (text: string) => process.stdout.write(text);
const err = (text: string) => process.stderr.write(text);
const json = (value: unknown) => out(`${JSON.stringify(value)}\n`);

function parseNumber(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError('must be a number');
  return n;
}

function parseInteger(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n)) throw new InvalidArgumentError('must be a whole number');
  return n;
}

function parsePositive(value: string): number {
  const n = parseInteger(value);
  if (n < 1) throw new InvalidArgumentError('must be at least 1');
  return n;
}

function common(c: Command): Command {
  return c
    .option('--url <url>', 'server base URL [HANGAR_URL, default http://127.0.0.1:8080]')
    .option('--api-key <key>', 'API key [HANGAR_API_KEY, else ./data/admin.key]')
    .option('--org <uuid>', 'organisation id, sent as X-Dedalus-Org-Id [HANGAR_ORG_ID]')
    .option('--json', 'print the JSON response');
}

function sizeOptions(c: Command, required: boolean): Command {
  const add = (flags: string, description: string, parse: (v: string) => number) =>
    required ? c.requiredOption(flags, description, parse) : c.option(flags, description, parse);
  add('--vcpu <n>', 'vCPUs, in steps of 0.25', parseNumber);
  add('--memory-mib <n>', 'memory in MiB', parseInteger);
  add('--storage-gib <n>', 'storage in GiB (only grows)', parseInteger);
  return c.option('--autosleep <duration>', 'idle time before sleeping: 30s, 15m, 2h, 1w3d, seconds, or never');
}

function sizeBody(o: SizeOptions): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  if (o.vcpu !== undefined) body['vcpu'] = o.vcpu;
  if (o.memoryMib !== undefined) body['memory_mib'] = o.memoryMib;
  if (o.storageGib !== undefined) body['storage_gib'] = o.storageGib;
  if (o.autosleep !== undefined) body['autosleep'] = o.autosleep;
  return body;
}

/** Runs an action, maps its failure to a message and an exit code. */
function run<A extends unknown[]>(fn: (...args: A) => Promise<number>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      process.exitCode = await fn(...args);
    } catch (e) {
      process.exitCode = report(e);
    }
  };
}

function report(e: unknown): number {
  if (e instanceof ApiCallError) {
    err(formatError(e.body));
    return EXIT.api;
  }
  if (e instanceof UsageError) {
    err(`error: ${e.message}\n`);
    return EXIT.usage;
  }
  err(`error: ${e instanceof Error ? e.message : String(e)}\n`);
  return EXIT.api;
}

const clientOf = (o: ConnectionOptions) => new HangarClient(resolveConfig(o));

/** Prints a mutation's answer, or with --wait follows it to convergence and prints the final state. */
async function finishMutation(client: HangarClient, verb: string, o: MutationOptions, res: { status: number; body: LifecycleResponse }): Promise<number> {
  if (!o.wait || res.status === 200 || isConverged(res.body)) {
    if (o.json) json(res.body);
    else out(formatMutation(verb, res.status, res.body));
    return EXIT.ok;
  }
  const m = res.body;
  if (!o.json) err(`${verb} ${m.machine_id}; waiting for ${m.desired_state}\n`);
  const outcome = await watchMachine({
    client,
    machineId: m.machine_id,
    lastEventId: m.status.revision,
    initial: m,
    ...(o.json ? {} : { onStatus: (s: LifecycleResponse, since: number) => err(formatStatusLine(s, since)) }),
    onNote: (n) => err(`  note: ${n}\n`),
  });
  const final = outcome.machine ?? m;
  if (o.json) json(final);
  else out(`${final.machine_id}: ${final.status.phase}\n${formatMachine(final)}`);
  return exitOf(outcome);
}

function exitOf(outcome: WatchOutcome): number {
  switch (outcome.kind) {
    case 'converged':
      return EXIT.ok;
    case 'failed': {
      const s = outcome.machine.status;
      err(`machine ${outcome.machine.machine_id} failed: ${s.reason}${s.last_error !== undefined ? `: ${s.last_error}` : ''} (not retryable)\n`);
      return EXIT.failed;
    }
    case 'stream-error':
      err(formatError(outcome.error));
      return EXIT.failed;
  }
}

export function registerMachineCommands(program: Command): void {
  const machines = program
    .command('machines')
    .description('manage machines over the HTTP API')
    // Usage errors (unknown flags, missing arguments) exit 2; help exits 0.
    .exitOverride((e) => process.exit(e.exitCode === 0 ? EXIT.ok : EXIT.usage));

  sizeOptions(common(machines.command('create').description('create a machine')), true)
    .option('--wait', 'wait until it runs, then print it')
    .action(
      run(async (o: MutationOptions & SizeOptions) => {
        const client = clientOf(o);
        return finishMutation(client, 'created', o, await client.createMachine(sizeBody(o)));
      }),
    );

  common(machines.command('list').description('list machines'))
    .option('--limit <n>', 'machines per page', parsePositive)
    .option('--cursor <cursor>', 'start after this cursor (from a previous page)')
    .option('--all', 'follow next_cursor to the end')
    .action(
      run(async (o: CommonOptions & { limit?: number; cursor?: string; all?: boolean }) => {
        const client = clientOf(o);
        const first = await client.listMachines({ ...(o.limit !== undefined ? { limit: o.limit } : {}), ...(o.cursor !== undefined ? { cursor: o.cursor } : {}) });
        if (!o.all) {
          if (o.json) json(first.body);
          else {
            out(formatMachineTable(first.body.items));
            if (first.body.next_cursor !== undefined) err(`more: --cursor ${first.body.next_cursor}, or --all\n`);
          }
          return EXIT.ok;
        }
        const items: MachineListItem[] = [...first.body.items];
        let cursor = first.body.next_cursor;
        while (cursor !== undefined) {
          const page = await client.listMachines({ ...(o.limit !== undefined ? { limit: o.limit } : {}), cursor });
          items.push(...page.body.items);
          cursor = page.body.next_cursor;
        }
        if (o.json) json({ items });
        else out(formatMachineTable(items));
        return EXIT.ok;
      }),
    );

  common(machines.command('get').description('show a machine').argument('<machine_id>')).action(
    run(async (id: string, o: CommonOptions) => {
      const { body } = await clientOf(o).getMachine(id);
      if (o.json) json(body);
      else out(formatMachine(body));
      return EXIT.ok;
    }),
  );

  sizeOptions(common(machines.command('update').description('resize a machine or change its autosleep').argument('<machine_id>')), false)
    .option('--if-match <revision>', 'only if the machine is at this revision')
    .action(
      run(async (id: string, o: MutationOptions & SizeOptions) => {
        const body = sizeBody(o);
        if (Object.keys(body).length === 0) throw new UsageError('nothing to update: give --vcpu, --memory-mib, --storage-gib or --autosleep');
        const client = clientOf(o);
        return finishMutation(client, 'updated', { ...o, wait: false }, await client.updateMachine(id, body, o.ifMatch));
      }),
    );

  const actions = [
    ['delete', 'destroy a machine', 'deleted', (c: HangarClient, id: string, ifMatch?: string) => c.deleteMachine(id, ifMatch)],
    ['sleep', 'put a running machine to sleep', 'sleep requested for', (c: HangarClient, id: string, ifMatch?: string) => c.sleepMachine(id, ifMatch)],
    ['wake', 'wake a sleeping machine', 'wake requested for', (c: HangarClient, id: string, ifMatch?: string) => c.wakeMachine(id, ifMatch)],
  ] as const;
  for (const [name, description, verb, call] of actions) {
    common(machines.command(name).description(description).argument('<machine_id>'))
      .option('--if-match <revision>', 'only if the machine is at this revision')
      .option('--wait', 'wait until it converges, then print it')
      .action(
        run(async (id: string, o: MutationOptions) => {
          const client = clientOf(o);
          return finishMutation(client, verb, o, await call(client, id, o.ifMatch));
        }),
      );
  }

  common(machines.command('watch').description('follow the status of a machine until it converges').argument('<machine_id>'))
    .option('--last-event-id <revision>', 'replay the changes after this revision first', (v) => String(parseInteger(v)))
    .action(
      run(async (id: string, o: CommonOptions & { lastEventId?: string }) => {
        const client = clientOf(o);
        // In --json mode stdout is one status per line; notes go to stderr.
        const noteTo = o.json ? err : out;
        const outcome = await watchMachine({
          client,
          machineId: id,
          ...(o.lastEventId !== undefined ? { lastEventId: o.lastEventId } : {}),
          onStatus: (m, since) => (o.json ? json(m) : out(formatStatusLine(m, since))),
          onNote: (n) => noteTo(`  note: ${n}\n`),
        });
        if (outcome.kind === 'converged' && !o.json) out(`${outcome.machine.machine_id} is ${outcome.machine.status.phase} (rev ${outcome.machine.status.revision})\n`);
        return exitOf(outcome);
      }),
    );

  registerExecCommand(machines, common);
}
