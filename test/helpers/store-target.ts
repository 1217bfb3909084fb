/**
 * Which store the suites run on: `HANGAR_TEST_STORE=postgres` runs them on
 * PostgreSQL (a fresh database per server, on HANGAR_TEST_DATABASE_URL);
 * otherwise SQLite. Suites call startTestServer() and never need to know.
 */
import { randomBytes } from 'node:crypto';
import { pgQuery } from './pg.js';

export interface TestDatabase {
  readonly url: string;
  drop(): Promise<void>;
}

export function testStoreKind(): 'sqlite' | 'postgres' {
  return process.env['HANGAR_TEST_STORE'] === 'postgres' ? 'postgres' : 'sqlite';
}

export function adminDatabaseUrl(): string {
  const url = process.env['HANGAR_TEST_DATABASE_URL'];
  if (url === undefined || url === '') throw new Error('HANGAR_TEST_DATABASE_URL is not set (global setup sets it)');
  return url;
}

/** A fresh PostgreSQL database when the suites run on PostgreSQL; null for SQLite. */
export async function createTestDatabase(): Promise<TestDatabase | null> {
  if (testStoreKind() !== 'postgres') return null;
  const admin = adminDatabaseUrl();
  const name = `hangar_t_${randomBytes(6).toString('hex')}`;
  await pgQuery(admin, `create database ${name}`);
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      await pgQuery(admin, `drop database if exists ${name} with (force)`);
    },
  };
}
