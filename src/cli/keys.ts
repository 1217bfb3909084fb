/**
 * `hangar keys create|list|revoke`: API key management, straight on the store
 * (SQLite file or PostgreSQL), so it works before any key exists and while
 * the server runs.
 */
import type { Command } from 'commander';
import { createApiKey } from '../api/api-keys.js';
import { loadConfig } from '../config.js';
import { isUuid } from '../domain/ids.js';
import { rfc3339 } from '../domain/types.js';
import { openStore, storeTargetOf } from '../store/open.js';
import type { Store } from '../store/store.js';

async function withStore<T>(opts: { dataDir?: string; databaseUrl?: string }, fn: (store: Store) => Promise<T>): Promise<T> {
  const config = loadConfig(process.env, { 'data-dir': opts.dataDir, 'database-url': opts.databaseUrl });
  const store = await openStore(storeTargetOf(config));
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

export function registerKeyCommands(program: Command): void {
  const keys = program.command('keys').description('manage API keys (works on the store directly)');
  const storeOptions = (c: Command) =>
    c.option('--data-dir <dir>', 'data directory [HANGAR_DATA_DIR]').option('--database-url <url>', 'PostgreSQL URL [HANGAR_DATABASE_URL]');

  storeOptions(
    keys
      .command('create')
      .description('create an API key for an organisation (shown once)')
      .requiredOption('--org <uuid>', 'organisation id (created if new)')
      .option('--scope <scope>', 'user or admin', 'user')
      .option('--name <name>', 'a label for the key', '')
      .option('--json', 'print JSON'),
  ).action(async (o: { org: string; scope: string; name: string; json?: boolean; dataDir?: string; databaseUrl?: string }) => {
    if (!isUuid(o.org)) throw new Error(`--org must be a UUID, got "${o.org}"`);
    if (o.scope !== 'user' && o.scope !== 'admin') throw new Error('--scope must be user or admin');
    const created = await withStore(o, (store) => createApiKey(store, { orgId: o.org.toLowerCase(), scope: o.scope as 'user' | 'admin', name: o.name }));
    if (o.json) {
      process.stdout.write(`${JSON.stringify({ key: created.key, key_id: created.record.keyId, org_id: created.record.orgId, scope: created.record.scope })}\n`);
    } else {
      process.stdout.write(`${created.key}\n`);
      process.stderr.write(`key ${created.record.keyId} (${created.record.scope}) for org ${created.record.orgId}; it is not shown again\n`);
    }
  });

  storeOptions(keys.command('list').description('list API keys (never the keys themselves)').option('--org <uuid>', 'only this organisation').option('--json', 'print JSON')).action(
    async (o: { org?: string; json?: boolean; dataDir?: string; databaseUrl?: string }) => {
      const list = await withStore(o, (store) => store.listApiKeys(o.org?.toLowerCase()));
      if (o.json) {
        process.stdout.write(`${JSON.stringify(list.map((k) => ({ key_id: k.keyId, org_id: k.orgId, prefix: k.prefix, scope: k.scope, name: k.name, created_at: rfc3339(k.createdAt), revoked_at: k.revokedAt === null ? null : rfc3339(k.revokedAt) })))}\n`);
        return;
      }
      for (const k of list) {
        process.stdout.write(`${k.keyId}  ${k.orgId}  ${k.prefix}…  ${k.scope.padEnd(5)}  ${k.revokedAt === null ? 'active ' : 'revoked'}  ${k.name}\n`);
      }
    },
  );

  storeOptions(keys.command('revoke').description('revoke an API key').argument('<key_id>')).action(
    async (keyId: string, o: { dataDir?: string; databaseUrl?: string }) => {
      const revoked = await withStore(o, (store) => store.revokeApiKey(keyId, Date.now()));
      if (!revoked) throw new Error(`no active key ${keyId}`);
      process.stdout.write(`revoked ${keyId}\n`);
    },
  );
}
