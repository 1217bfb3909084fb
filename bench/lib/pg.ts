/**
 * A throw-away PostgreSQL database per benchmark case: `create database
 * hangar_bench_<random>` through a maintenance connection, and
 * `drop database ... with (force)` at the end. Loopback servers only.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';

export const DEFAULT_PG_URL = 'postgres://postgres@127.0.0.1:5432/test';

export interface BenchDatabase {
  readonly name: string;
  /** URL of the new database (the maintenance URL with its database name replaced). */
  readonly url: string;
  drop(): Promise<void>;
}

const live = new Set<string>();

/** Names of bench databases created and not dropped yet (for error messages). */
export function undroppedDatabases(): string[] {
  return [...live];
}

function checkLoopback(u: URL): void {
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname)) throw new Error(`--database-url: ${u.hostname} is not a loopback address; the benchmark talks to 127.0.0.1 only`);
}

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** `maintenanceUrl`: any database on the server (e.g. .../test); the new one is created beside it. */
export async function createBenchDatabase(maintenanceUrl: string = DEFAULT_PG_URL): Promise<BenchDatabase> {
  const base = new URL(maintenanceUrl);
  checkLoopback(base);
  const name = `hangar_bench_${randomBytes(6).toString('hex')}`;
  await withClient(maintenanceUrl, (c) => c.query(`create database ${name}`));
  live.add(name);
  const url = new URL(maintenanceUrl);
  url.pathname = `/${name}`;
  let dropped = false;
  return {
    name,
    url: url.toString(),
    drop: async () => {
      if (dropped) return;
      await withClient(maintenanceUrl, (c) => c.query(`drop database if exists ${name} with (force)`));
      dropped = true;
      live.delete(name);
    },
  };
}
