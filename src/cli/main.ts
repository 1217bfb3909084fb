#!/usr/bin/env node
/**
 * The `hangar` command: `serve` runs the controlplane; `keys` manages API keys
 * directly in the store; `machines` talks to a running server over HTTP.
 */
import { Command } from 'commander';
import { VERSION } from '../version.js';
import { registerKeyCommands } from './keys.js';
import { registerMachineCommands } from './machines.js';
import { registerServeCommand } from './serve.js';

const program = new Command();
program.name('hangar').description('Hangar: a self-hostable controlplane for sandbox machines').version(VERSION);
registerServeCommand(program);
registerKeyCommands(program);
registerMachineCommands(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`hangar: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
