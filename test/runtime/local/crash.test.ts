/**
 * The controlplane process dies (SIGKILL) with a machine running: the sandbox
 * lives on, and a new runtime recovers it. The dying controlplane is a real
 * separate node process running the runtime's own code (transpiled here).
 */
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createLocalRuntime, type LocalRuntime } from '../../../src/runtime/local/index.js';
import { processExists, sh, startCrashableControlplane, transpileSources } from './helpers.js';

describe('controlplane death', { timeout: 60_000 }, () => {
  let work: string;
  let stateDir: string;
  let rt: LocalRuntime | undefined;
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'hangar-local-crash-'));
    await chmod(work, 0o711); // the sandboxes' unprivileged setup walks through it to the state dir
    stateDir = join(work, 'state');
    await transpileSources(join(work, 'build'));
  });
  afterAll(async () => {
    rt ??= await createLocalRuntime({ stateDir });
    await rt.recover([]);
    await rt.close();
    await rm(work, { recursive: true, force: true });
  });

  test('a machine survives the controlplane being killed and is recovered by the next one', async () => {
    const script = `
      import { createLocalRuntime } from ${JSON.stringify(join(work, 'build/src/runtime/local/index.js'))};
      const rt = await createLocalRuntime({ stateDir: ${JSON.stringify(stateDir)} });
      await rt.start({ machineId: 'crash-m', hostId: rt.hostId, sizes: { vcpu: 1, memoryMib: 128, storageGib: 1 } });
      const h = await rt.exec('crash-m', { argv: ['sh', '-c', 'echo before-crash > /root/f'] }, () => {});
      await h.done;
      console.log(JSON.stringify(await rt.sandboxInfo('crash-m')));
      setInterval(() => {}, 1000);
    `;
    const controlplane = await startCrashableControlplane(script, 30_000);
    const info = controlplane.info;
    await controlplane.kill();

    expect(await processExists(info.initPid)).toBe(true);
    rt = await createLocalRuntime({ stateDir });
    await rt.recover([{ machineId: 'crash-m', hostId: rt.hostId, state: 'running', sizes: { vcpu: 1, memoryMib: 128, storageGib: 1 } }]);
    expect((await rt.inspect('crash-m', rt.hostId)).state).toBe('running');
    expect((await rt.sandboxInfo('crash-m'))?.initPid).toBe(info.initPid);
    expect(await sh(rt, 'crash-m', 'cat /root/f')).toBe('before-crash\n');
    await rt.destroy('crash-m');
    expect(await processExists(info.initPid)).toBe(false);
  });
});
