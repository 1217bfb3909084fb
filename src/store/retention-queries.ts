/**
 * Retention: compaction of the event log (per machine, keeping the newest
 * events and recording what was dropped, so a resume from before it gets a
 * `compacted` frame) and purging of destroyed machines after their period.
 */
import type { Kysely } from 'kysely';
import { sql } from 'kysely';
import type { Database } from './schema.js';
import type { CompactionPolicy } from './store.js';

type Db = Kysely<Database>;

/**
 * Drops events beyond the newest `keepPerMachine` of each machine that are
 * older than `maxAgeMs`, and records per machine the highest revision
 * dropped, so a resume from before it gets a `compacted` frame.
 */
export async function compactEvents(db: Db, policy: CompactionPolicy, now: number): Promise<number> {
  const cutoff = now - policy.maxAgeMs;
  return db.transaction().execute(async (trx) => {
    const ranked = trx
      .selectFrom('events')
      .select([
        'revision',
        'machine_id',
        'committed_at',
        sql<number>`row_number() over (partition by machine_id order by revision desc)`.as('rank'),
      ])
      .as('ranked');
    const doomed = await trx
      .selectFrom(ranked)
      .select(['ranked.machine_id', (eb) => eb.fn.max('ranked.revision').as('max_revision')])
      .where('ranked.rank', '>', policy.keepPerMachine)
      .where('ranked.committed_at', '<', cutoff)
      .groupBy('ranked.machine_id')
      .execute();
    let deleted = 0;
    for (const d of doomed) {
      const maxRevision = Number(d.max_revision);
      await trx
        .updateTable('machines')
        .set({ log_compacted_revision: maxRevision })
        .where('machine_id', '=', d.machine_id)
        .where('log_compacted_revision', '<', maxRevision)
        .execute();
      const res = await trx
        .deleteFrom('events')
        .where('machine_id', '=', d.machine_id)
        .where('revision', '<=', maxRevision)
        .executeTakeFirst();
      deleted += Number(res.numDeletedRows);
    }
    return deleted;
  });
}

export async function purgeDestroyed(db: Db, destroyedBefore: number): Promise<number> {
  return db.transaction().execute(async (trx) => {
    const doomed = await trx
      .selectFrom('machines')
      .select('machine_id')
      .where('phase', '=', 'destroyed')
      .where('destroyed_at', '<', destroyedBefore)
      .execute();
    if (doomed.length === 0) return 0;
    const ids = doomed.map((d) => d.machine_id);
    await trx.deleteFrom('events').where('machine_id', 'in', ids).execute();
    await trx.deleteFrom('machines').where('machine_id', 'in', ids).execute();
    return ids.length;
  });
}
