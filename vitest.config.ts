import { defineConfig } from 'vitest/config';

/** Suites that talk to the store run twice: on SQLite and on PostgreSQL. */
const STORE_SUITES = ['test/api/**/*.test.ts', 'test/reconciler/**/*.test.ts', 'test/server/**/*.test.ts', 'test/store/**/*.test.ts', 'test/events/**/*.test.ts'];

export default defineConfig({
  test: {
    // Suites that start real servers and sandboxes share cgroups, ports and a
    // PostgreSQL server; two workers keep the 2-core machine busy without
    // making them fight.
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 60_000,
    globalSetup: ['test/global-setup.ts'],
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/domain/**/*.test.ts'] } },
      { extends: true, test: { name: 'sqlite', include: STORE_SUITES, env: { HANGAR_TEST_STORE: 'sqlite' } } },
      { extends: true, test: { name: 'postgres', include: STORE_SUITES, env: { HANGAR_TEST_STORE: 'postgres' } } },
      { extends: true, test: { name: 'replicas', include: ['test/replicas/**/*.test.ts'], env: { HANGAR_TEST_STORE: 'postgres' } } },
      { extends: true, test: { name: 'local-runtime', include: ['test/runtime/**/*.test.ts', 'test/executions/**/*.test.ts'] } },
      { extends: true, test: { name: 'cli', include: ['test/cli/**/*.test.ts'] } },
    ],
  },
});
