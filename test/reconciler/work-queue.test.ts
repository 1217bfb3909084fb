/** The work queue: adds coalesce, one worker per id, an id added while processed runs once more. */
import { describe, expect, it } from 'vitest';
import { WorkQueue } from '../../src/reconciler/work-queue.js';

describe('WorkQueue', () => {
  it('coalesces duplicate adds', async () => {
    const q = new WorkQueue();
    q.add('a');
    q.add('a');
    q.add('b');
    expect(q.length).toBe(2);
    expect(await q.get()).toBe('a');
    expect(await q.get()).toBe('b');
  });

  it('an id added while it is processed is handed out again only after done()', async () => {
    const q = new WorkQueue();
    q.add('a');
    const id = await q.get();
    q.add('a');
    expect(q.length).toBe(0); // not handed to a second worker meanwhile
    q.done(id!);
    expect(q.length).toBe(1);
    expect(await q.get()).toBe('a');
  });

  it('a waiting worker gets the next add; shutDown releases waiters', async () => {
    const q = new WorkQueue();
    const waiting = q.get();
    q.add('x');
    expect(await waiting).toBe('x');
    const another = q.get();
    q.shutDown();
    expect(await another).toBeUndefined();
    q.add('y');
    expect(q.length).toBe(0);
  });

  it('addAfter delays; an earlier delayed add wins', async () => {
    const q = new WorkQueue();
    q.addAfter('a', 200);
    q.addAfter('a', 20);
    await new Promise((r) => setTimeout(r, 60));
    expect(q.length).toBe(1);
    q.shutDown();
  });

  it('addSpread hands ids over a few at a time, all of them within the period', async () => {
    const q = new WorkQueue();
    const ids = Array.from({ length: 100 }, (_, i) => `m${i}`);
    q.addSpread(ids, 100);
    expect(q.length).toBeLessThanOrEqual(10);
    expect(q.length).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 250));
    expect(q.length).toBe(100);
    const got = new Set<string | undefined>();
    for (let i = 0; i < 100; i++) got.add(await q.get());
    expect(got).toEqual(new Set(ids));
    q.shutDown();
  });

  it('a newer spread replaces the one in progress; shutDown stops it', async () => {
    const q = new WorkQueue();
    q.addSpread(Array.from({ length: 1000 }, (_, i) => `old${i}`), 1000);
    const first = q.length;
    q.addSpread(['new'], 100);
    await new Promise((r) => setTimeout(r, 60));
    expect(q.length).toBe(first + 1);
    q.addSpread(Array.from({ length: 1000 }, (_, i) => `late${i}`), 1000);
    const afterShutdown = q.length;
    q.shutDown();
    await new Promise((r) => setTimeout(r, 60));
    expect(q.length).toBe(afterShutdown);
  });
});
