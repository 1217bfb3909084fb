/**
 * `hangar machines exec` end to end: the built CLI in a child process against
 * a real server (simulated runtime): it prints the command's output and exits
 * with its exit code.
 */
import { spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api } from '../helpers/http.js';
import type { TestServer } from '../helpers/server.js';
import { startTestServer, tempDir } from '../helpers/server.js';
import type { CliResult } from './run-cli.js';
import { assertBuilt, CLI, cleanEnv, machinesCli } from './run-cli.js';

describe('hangar machines exec', () => {
  let server: TestServer;
  let api: Api;
  let cli: ReturnType<typeof machinesCli>;
  let machineId: string;
  const dir = tempDir('hangar-exec-cli-');

  beforeAll(async () => {
    assertBuilt();
    server = await startTestServer();
    api = new Api(server.url, server.adminKey);
    cli = machinesCli(server);
    const { body } = await api.createMachine();
    machineId = body.machine_id;
    await api.waitForPhase(machineId, 'running');
  });
  afterAll(async () => {
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** The CLI with `input` piped to its stdin (run-cli.ts gives none). */
  function withStdin(args: string[], input: string): Promise<CliResult> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [CLI, 'machines', ...args], {
        env: cleanEnv({ HANGAR_URL: server.url, HANGAR_API_KEY: server.adminKey }),
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout, stderr }));
      child.stdin.end(input);
    });
  }

  it('prints stdout and exits 0', async () => {
    const r = await cli(['exec', machineId, '--', 'echo', 'hello', 'from', 'cli']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('hello from cli\n');
  });

  it("exits with the command's exit code", async () => {
    const r = await cli(['exec', machineId, '--', 'false']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
  });

  it('sends piped stdin, or a file with --stdin-file', async () => {
    const piped = await withStdin(['exec', machineId, '--', 'cat'], 'piped input\n');
    expect(piped.code, piped.stderr).toBe(0);
    expect(piped.stdout).toBe('piped input\n');
    const file = join(dir, 'in.txt');
    writeFileSync(file, 'file input\n');
    const fromFile = await cli(['exec', machineId, '--stdin-file', file, '--', 'cat']);
    expect(fromFile.stdout).toBe('file input\n');
  });

  it('passes --env and --cwd (keys only are recorded)', async () => {
    const r = await cli(['exec', machineId, '--env', 'A=1', '--env', 'B=x=y', '--cwd', '/root', '--', 'true']);
    expect(r.code, r.stderr).toBe(0);
    const list = (await api.get(`/v1/machines/${machineId}/executions?limit=500`)).body.items;
    expect(list[list.length - 1]).toMatchObject({ command: ['true'], env_keys: ['A', 'B'], cwd: '/root' });
  });

  it('exits 124 on timeout and 125 when the command cannot start or the API refuses', async () => {
    const timeout = await cli(['exec', machineId, '--timeout-ms', '100', '--', 'sleep', '30']);
    expect(timeout.code).toBe(124);
    expect(timeout.stderr).toContain('EXECUTION_TIMEOUT');
    const missing = await cli(['exec', machineId, '--', 'no-such-program']);
    expect(missing.code).toBe(125);
    expect(missing.stderr).toContain('EXECUTABLE_NOT_FOUND');
    const unknown = await cli(['exec', 'dm-00000000-0000-7000-8000-000000000000', '--', 'true']);
    expect(unknown.code).toBe(125);
    expect(unknown.stderr).toContain('MACHINE_NOT_FOUND');
  });

  it('wakes a sleeping machine and runs the command', async () => {
    expect((await api.post(`/v1/machines/${machineId}/sleep`)).status).toBe(202);
    await api.waitForPhase(machineId, 'sleeping');
    const r = await cli(['exec', machineId, '--', 'echo', 'woke']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('woke\n');
    expect(r.stderr).toContain('waking');
  });
});
