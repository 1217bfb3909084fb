/**
 * Executions outlive the controlplane process: after a restart on the same
 * store, finished ones are readable (status, events, output); one that was
 * running when the process shut down is failed with CONTROLPLANE_SHUTDOWN;
 * one that was running when the process died (left as `running` in the
 * store) is failed with CONTROLPLANE_RESTARTED at start-up.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openStore } from '../../src/store/open.js';
import { ExecutionsStore } from '../../src/store/executions-store.js';
import { newExecution, newExecutionId } from '../../src/domain/executions.js';
import { Api } from '../helpers/http.js';
import { assertMatchesReference } from '../helpers/reference-schemas.js';
import type { TestServer } from '../helpers/server.js';
import { startTestServer, tempDir } from '../helpers/server.js';
import { createTestDatabase } from '../helpers/store-target.js';

describe('executions across a controlplane restart', () => {
  const dataDir = tempDir();
  let database: Awaited<ReturnType<typeof createTestDatabase>> = null;
  let server: TestServer | undefined;

  afterAll(async () => {
    await server?.close();
    await database?.drop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  async function waitForStatus(api: Api, path: string, status: string): Promise<any> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const res = await api.get(path);
      if (res.body?.status === status) return res.body;
      if (Date.now() > deadline) throw new Error(`${path} never became ${status}: ${res.text}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  it('keeps finished executions, and fails the ones it could not finish', async () => {
    database = await createTestDatabase();
    server = await startTestServer({ dataDir, database });
    let api = new Api(server.url, server.adminKey);
    const { body: m } = await api.createMachine();
    await api.waitForPhase(m.machine_id, 'running');
    const base = `/v1/machines/${m.machine_id}/executions`;

    const done = (await api.post(base, { command: ['echo', 'kept'] })).body;
    await waitForStatus(api, `${base}/${done.execution_id}`, 'succeeded');
    const running = (await api.post(base, { command: ['sleep', '60'] })).body;
    await waitForStatus(api, `${base}/${running.execution_id}`, 'running');
    await server.close();

    // A process that died mid-command leaves its execution `running` in the store.
    const store = await openStore(database !== null ? { kind: 'postgres', url: database.url } : { kind: 'sqlite', path: join(dataDir, 'hangar.db') });
    const orphanId = newExecutionId();
    const now = Date.now();
    await new ExecutionsStore(store).insert(
      { ...newExecution({ executionId: orphanId, machineId: m.machine_id, orgId: server.orgId, owner: 'default', status: 'running', command: ['sleep', '60'], now }), startedAt: now },
      { executionId: orphanId, sequence: 1, type: 'lifecycle', at: now, status: 'running', chunk: null, exitCode: null, signal: null, errorCode: null, errorMessage: null },
    );
    await store.close();

    server = await startTestServer({ dataDir, database });
    api = new Api(server.url, server.adminKey);

    const kept = await api.get(`${base}/${done.execution_id}`);
    expect(kept.status).toBe(200);
    assertMatchesReference('ExecutionResponse', kept.body);
    expect(kept.body).toMatchObject({ status: 'succeeded', exit_code: 0, stdout_bytes: 5 });
    expect((await api.get(`${base}/${done.execution_id}/output`)).body.stdout).toBe('kept\n');

    const shut = await api.get(`${base}/${running.execution_id}`);
    expect(shut.body).toMatchObject({ status: 'failed', error_code: 'CONTROLPLANE_SHUTDOWN' });

    const orphan = await api.get(`${base}/${orphanId}`);
    assertMatchesReference('ExecutionResponse', orphan.body);
    expect(orphan.body).toMatchObject({ status: 'failed', error_code: 'CONTROLPLANE_RESTARTED' });
    expect(orphan.body.completed_at).toBeDefined();
    const events = (await api.get(`${base}/${orphanId}/events`)).body;
    expect(events.next_cursor).toBeUndefined();
    expect(events.items.map((e: any) => [e.sequence, e.status])).toEqual([
      [1, 'running'],
      [2, 'failed'],
    ]);

    const list = (await api.get(base)).body;
    expect(list.items.map((e: any) => e.execution_id)).toEqual([done.execution_id, running.execution_id, orphanId].sort());
  });
});
