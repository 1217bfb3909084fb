/**
 * `hangar machines ...` end to end: the built CLI in a child process against
 * a real server (real HTTP, simulated runtime).
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LifecycleResponse, MachineListItem } from '../../src/domain/types.js';
import { Api } from '../helpers/http.js';
import type { TestServer } from '../helpers/server.js';
import { startTestServer, tempDir } from '../helpers/server.js';
import { assertBuilt, machinesCli, parseJsonOutput, runCli } from './run-cli.js';

const UNKNOWN_ID = 'dm-00000000-0000-7000-8000-000000000000';
const SIZE = ['--vcpu', '1', '--memory-mib', '512', '--storage-gib', '5'];

describe('hangar machines', () => {
  let server: TestServer;
  let api: Api;
  let cli: ReturnType<typeof machinesCli>;

  beforeAll(async () => {
    assertBuilt();
    server = await startTestServer();
    api = new Api(server.url, server.adminKey);
    cli = machinesCli(server);
  });
  afterAll(async () => {
    await server?.close();
  });

  async function createRunning(): Promise<LifecycleResponse> {
    const r = await cli(['create', ...SIZE, '--wait', '--json']);
    expect(r.code, r.stderr).toBe(0);
    return parseJsonOutput<LifecycleResponse>(r);
  }

  it('create prints a summary; --json prints the LifecycleResponse', async () => {
    const human = await cli(['create', '--vcpu', '0.5', '--memory-mib', '256', '--storage-gib', '2', '--autosleep', '15m']);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(/^created dm-[0-9a-f-]{36}: accepted, converging$/m);
    expect(human.stdout).toMatch(/^phase\s+accepted \(Accepted\)$/m);
    expect(human.stdout).toMatch(/^size\s+0\.5 vCPU, 256 MiB memory, 2 GiB storage$/m);
    expect(human.stdout).toMatch(/^autosleep\s+15m$/m);

    const json = await cli(['create', ...SIZE, '--json']);
    expect(json.code, json.stderr).toBe(0);
    const m = parseJsonOutput<LifecycleResponse>(json);
    expect(m).toMatchObject({ vcpu: 1, memory_mib: 512, storage_gib: 5, desired_state: 'running', status: { phase: 'accepted' } });
    expect(json.stdout.trim().split('\n')).toHaveLength(1);
  });

  it('create --wait exits 0 with a running machine', async () => {
    const r = await cli(['create', ...SIZE, '--wait']);
    expect(r.code, r.stderr).toBe(0);
    const id = /^machine\s+(dm-\S+)$/m.exec(r.stdout)?.[1];
    expect(id).toBeDefined();
    expect(r.stdout).toMatch(/^phase\s+running \(Started\)$/m);
    // The progress went to stderr, in order.
    const phases = [...r.stderr.matchAll(/^\s+\+\d+\.\d{3}s\s+(\w+)/gm)].map((x) => x[1]);
    expect(phases.at(-1)).toBe('running');
    expect((await api.get(`/v1/machines/${id}`)).body.status.phase).toBe('running');
  });

  it('get shows a machine, in both forms', async () => {
    const m = await createRunning();
    const human = await cli(['get', m.machine_id]);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toContain(`machine    ${m.machine_id}\n`);
    expect(human.stdout).toMatch(/^phase\s+running \(Started\)$/m);
    expect(human.stdout).toMatch(new RegExp(`^revision\\s+${m.status.revision}$`, 'm'));

    const json = parseJsonOutput<LifecycleResponse>(await cli(['get', m.machine_id, '--json']));
    expect(json).toEqual((await api.get(`/v1/machines/${m.machine_id}`)).body);
  });

  it('list prints a table; --all follows next_cursor into one JSON object', async () => {
    const a = await createRunning();
    const b = await createRunning();
    const table = await cli(['list']);
    expect(table.code, table.stderr).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ID\s+PHASE\s+DESIRED\s+VCPU\s+MEMORY\s+STORAGE\s+REVISION$/);
    const row = lines.find((l) => l.startsWith(a.machine_id));
    expect(row).toMatch(new RegExp(`^${a.machine_id}\\s+running\\s+running\\s+1\\s+512 MiB\\s+5 GiB\\s+\\d+$`));

    const page = await cli(['list', '--limit', '1', '--json']);
    const first = parseJsonOutput<{ items: MachineListItem[]; next_cursor?: string }>(page);
    expect(first.items).toHaveLength(1);
    expect(first.next_cursor).toBeDefined();
    const humanPage = await cli(['list', '--limit', '1']);
    expect(humanPage.stderr).toContain('--all');

    const all = parseJsonOutput<{ items: MachineListItem[]; next_cursor?: string }>(await cli(['list', '--limit', '1', '--all', '--json']));
    const ids = all.items.map((m) => m.machine_id);
    expect(ids).toEqual(expect.arrayContaining([a.machine_id, b.machine_id]));
    expect(new Set(ids).size).toBe(ids.length);
    expect(all.next_cursor).toBeUndefined();
    expect(ids).toEqual((await api.get('/v1/machines?limit=500')).body.items.map((m: MachineListItem) => m.machine_id));
  });

  it('update resizes and changes autosleep; a stale --if-match is REVISION_MISMATCH', async () => {
    const m = await createRunning();
    const human = await cli(['update', m.machine_id, '--vcpu', '2', '--autosleep', '1h', '--if-match', m.status.revision]);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(new RegExp(`^updated ${m.machine_id}: `, 'm'));
    expect(human.stdout).toMatch(/^size\s+2 vCPU, 512 MiB memory, 5 GiB storage$/m);
    expect(human.stdout).toMatch(/^autosleep\s+1h$/m);

    const json = parseJsonOutput<LifecycleResponse>(await cli(['update', m.machine_id, '--memory-mib', '1024', '--json']));
    expect(json).toMatchObject({ machine_id: m.machine_id, vcpu: 2, memory_mib: 1024, autosleep_seconds: 3600 });

    const stale = await cli(['update', m.machine_id, '--vcpu', '1', '--if-match', m.status.revision]);
    expect(stale.code).toBe(1);
    expect(stale.stdout).toBe('');
    expect(stale.stderr).toMatch(/^REVISION_MISMATCH: /);
    expect(stale.stderr).toContain(`provided_revision: ${m.status.revision}`);
  });

  it('sleep, wake and delete, with and without --wait', async () => {
    const m = await createRunning();
    const slept = await cli(['sleep', m.machine_id]);
    expect(slept.code, slept.stderr).toBe(0);
    expect(slept.stdout).toMatch(new RegExp(`^sleep requested for ${m.machine_id}: `, 'm'));
    expect(slept.stdout).toMatch(/^desired\s+sleeping/m);
    await api.waitForPhase(m.machine_id, 'sleeping');

    const woken = await cli(['wake', m.machine_id, '--wait', '--json']);
    expect(woken.code, woken.stderr).toBe(0);
    expect(parseJsonOutput<LifecycleResponse>(woken)).toMatchObject({ desired_state: 'running', status: { phase: 'running' } });

    const sleptWait = await cli(['sleep', m.machine_id, '--wait']);
    expect(sleptWait.code, sleptWait.stderr).toBe(0);
    expect(sleptWait.stdout).toMatch(/^phase\s+sleeping \(Stopped\)$/m);

    // Already sleeping: 200, done.
    const again = await cli(['sleep', m.machine_id]);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/: done$/m);

    const deleted = await cli(['delete', m.machine_id, '--wait', '--json']);
    expect(deleted.code, deleted.stderr).toBe(0);
    expect(parseJsonOutput<LifecycleResponse>(deleted)).toMatchObject({ desired_state: 'destroyed', status: { phase: 'destroyed' } });

    const m2 = await createRunning();
    const del = await cli(['delete', m2.machine_id]);
    expect(del.code, del.stderr).toBe(0);
    expect(del.stdout).toMatch(new RegExp(`^deleted ${m2.machine_id}: `, 'm'));
    expect(del.stdout).toMatch(/^desired\s+destroyed/m);
  });

  it('a wake of a destroyed machine is INVALID_STATE, exit 1, with details', async () => {
    const m = await createRunning();
    expect((await cli(['delete', m.machine_id, '--wait'])).code).toBe(0);
    const r = await cli(['wake', m.machine_id]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^INVALID_STATE: /);
  });

  it('watch prints the phases of a sleep in order and exits 0', async () => {
    const m = await createRunning();
    const sleep = await api.post(`/v1/machines/${m.machine_id}/sleep`);
    expect(sleep.status).toBe(202);
    // Replays from just before the sleep, then follows it live to the end.
    const r = await cli(['watch', m.machine_id, '--last-event-id', m.status.revision]);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    const frames = lines.filter((l) => /^\s+\+\d+\.\d{3}s/.test(l)).map((l) => /^\s+\+\d+\.\d{3}s\s+(\w+)\s+\((\w+)\)\s+rev (\d+)/.exec(l)!.slice(1));
    expect(frames.map(([phase, reason]) => `${phase} ${reason}`)).toEqual(['running SleepRequested', 'stopping SleepRequested', 'sleeping Stopped']);
    expect(frames[0]![2]).toBe(sleep.body.status.revision);
    expect(lines.at(-1)).toBe(`${m.machine_id} is sleeping (rev ${frames.at(-1)![2]})`);
  });

  it('watch --json prints one status per line with strictly increasing revisions', async () => {
    const m = await createRunning();
    await api.post(`/v1/machines/${m.machine_id}/sleep`);
    await api.waitForPhase(m.machine_id, 'sleeping');
    await api.post(`/v1/machines/${m.machine_id}/wake`);
    const r = await cli(['watch', m.machine_id, '--last-event-id', '0', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const frames = r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as LifecycleResponse);
    const revisions = frames.map((f) => Number(f.status.revision));
    for (let i = 1; i < revisions.length; i++) expect(revisions[i]).toBeGreaterThan(revisions[i - 1]!);
    expect(frames[0]!.status.phase).toBe('accepted');
    expect(frames.map((f) => f.status.phase)).toEqual(expect.arrayContaining(['starting', 'stopping', 'sleeping']));
    expect(frames.at(-1)).toMatchObject({ desired_state: 'running', status: { phase: 'running' } });
    expect(frames.every((f) => f.machine_id === m.machine_id)).toBe(true);
  });

  it('watch of a converged machine prints its state and exits 0', async () => {
    const m = await createRunning();
    const r = await cli(['watch', m.machine_id]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^\\s+\\+0\\.000s\\s+running\\s+\\(Started\\)\\s+rev ${m.status.revision}$`, 'm'));
    // Resuming at the current revision: nothing to replay, the stream ends at once.
    const resumed = await cli(['watch', m.machine_id, '--last-event-id', m.status.revision]);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stdout).toBe(`${m.machine_id} is running (rev ${m.status.revision})\n`);
  });

  it('an API error exits 1 with the error code on stderr', async () => {
    for (const args of [['get', UNKNOWN_ID], ['watch', UNKNOWN_ID], ['sleep', UNKNOWN_ID, '--json']]) {
      const r = await cli(args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toBe('MACHINE_NOT_FOUND: machine not found\n');
    }
    const bad = await cli(['create', '--vcpu', '0.3', '--memory-mib', '512', '--storage-gib', '5']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^INVALID_ARGUMENT: .*\n {2}body\.vcpu: must be a multiple of 0\.25\n/);
  });

  it('a wrong key is AUTH_INVALID', async () => {
    const r = await cli(['list'], { env: { HANGAR_API_KEY: 'hk_not-a-real-key' } });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^AUTH_INVALID: /);
  });

  it('a missing key is a clear usage error; ./data/admin.key is used when present', async () => {
    const cwd = tempDir('hangar-cli-');
    try {
      const missing = await runCli(['machines', 'list'], { cwd, env: { HANGAR_URL: server.url } });
      expect(missing.code).toBe(2);
      expect(missing.stdout).toBe('');
      expect(missing.stderr).toMatch(/^error: no API key: pass --api-key, set HANGAR_API_KEY, or run where .*admin\.key exists\n$/);

      mkdirSync(join(cwd, 'data'));
      writeFileSync(join(cwd, 'data', 'admin.key'), `${server.adminKey}\n`);
      const fromFile = await runCli(['machines', 'list'], { cwd, env: { HANGAR_URL: server.url } });
      expect(fromFile.code, fromFile.stderr).toBe(0);
      expect(fromFile.stdout).toMatch(/^ID\s+PHASE/);

      const flags = await runCli(['machines', 'list', '--json', '--url', server.url, '--api-key', server.adminKey, '--org', server.orgId], { cwd: tempDir('hangar-cli-') });
      expect(flags.code, flags.stderr).toBe(0);
      expect(parseJsonOutput<{ items: unknown[] }>(flags).items.length).toBeGreaterThan(0);
    } finally {
      rmSync(cwd, { recursive: true, force: true });
    }
  });

  it('--org of another organisation is AUTH_ORG_MISMATCH', async () => {
    const r = await cli(['list', '--org', '11111111-1111-4111-8111-111111111111']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^AUTH_ORG_MISMATCH: /);
  });

  it('usage errors exit 2', async () => {
    const missingFlag = await cli(['create', '--vcpu', '1']);
    expect(missingFlag.code).toBe(2);
    expect(missingFlag.stderr).toContain("required option '--memory-mib <n>' not specified");
    const notANumber = await cli(['create', '--vcpu', 'lots', '--memory-mib', '512', '--storage-gib', '5']);
    expect(notANumber.code).toBe(2);
    expect(notANumber.stderr).toContain('must be a number');
    const nothing = await cli(['update', UNKNOWN_ID]);
    expect(nothing.code).toBe(2);
    expect(nothing.stderr).toContain('nothing to update');
    const unknown = await cli(['frobnicate']);
    expect(unknown.code).toBe(2);
  });
});

describe('hangar machines, starts that fail for good', () => {
  let server: TestServer;
  let api: Api;
  let cli: ReturnType<typeof machinesCli>;

  beforeAll(async () => {
    assertBuilt();
    server = await startTestServer({ env: { SIM_FAILURE_RATE: '1', SIM_FAILURE_RETRYABLE: 'false' } });
    api = new Api(server.url, server.adminKey);
    cli = machinesCli(server);
  });
  afterAll(async () => {
    await server?.close();
  });

  it('watch exits 3 and says why', async () => {
    const created = await api.createMachine();
    expect(created.status).toBe(202);
    const r = await cli(['watch', created.body.machine_id]);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(3);
    expect(r.stdout).toMatch(/^\s+\+\d+\.\d{3}s\s+failed\s+\(\w+\)\s+rev \d+\s+error: .+\(not retryable\)$/m);
    expect(r.stderr).toMatch(new RegExp(`^machine ${created.body.machine_id} failed: \\w+`, 'm'));
  });

  it('create --wait exits 3 and prints the failed machine', async () => {
    const r = await cli(['create', ...SIZE, '--wait', '--json']);
    expect(r.code, r.stderr).toBe(3);
    expect(parseJsonOutput<LifecycleResponse>(r)).toMatchObject({ desired_state: 'running', status: { phase: 'failed', retryable: false } });
    expect(r.stderr).toMatch(/failed: \w+/);
  });
});
