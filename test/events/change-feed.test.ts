/** The change feed: each committed event once, in revision order, whatever order commits are reported in. */
import { describe, expect, it } from 'vitest';
import { ChangeFeed } from '../../src/events/change-feed.js';
import type { FeedEvent } from '../../src/events/change-feed.js';
import type { CommitListener, StoredEvent } from '../../src/store/store.js';

/** An event log in memory: the feed reads it only to fill gaps. */
function fakeLog(initial: StoredEvent[] = []) {
  const events = [...initial];
  let listener: CommitListener = () => undefined;
  return {
    events,
    reads: 0,
    headRevision: async () => events.at(-1)?.revision ?? 0,
    async readEvents(after: number, limit: number) {
      this.reads++;
      return events.filter((e) => e.revision > after).slice(0, limit);
    },
    onCommit(l: CommitListener) {
      listener = l;
    },
    remoteCommits: undefined,
    commit(e: StoredEvent) {
      events.push(e);
      events.sort((a, b) => a.revision - b.revision);
    },
    report(es: StoredEvent[]) {
      listener(es);
    },
  };
}

function ev(revision: number, machineId = 'dm-a'): StoredEvent {
  return { revision, machineId, orgId: 'o', phase: 'running', body: `{"r":${revision}}`, endsStream: false, committedAt: 0 };
}

async function settle(ms = 60) {
  await new Promise((r) => setTimeout(r, ms));
}

describe('ChangeFeed', () => {
  it('delivers local commits in revision order even when reported out of order', async () => {
    const log = fakeLog();
    const feed = new ChangeFeed(log);
    await feed.start();
    const got: number[] = [];
    feed.subscribe('dm-a', (events) => got.push(...events.map((e) => e.revision)));
    for (const r of [1, 2, 3]) log.commit(ev(r));
    log.report([ev(2)]);
    log.report([ev(3)]);
    await settle(5);
    expect(got).toEqual([]); // 1 is missing: 2 and 3 wait
    log.report([ev(1)]);
    await settle(5);
    expect(got).toEqual([1, 2, 3]);
    expect(feed.dispatchedRevision).toBe(3);
    await feed.stop();
  });

  it('fills a gap that no local commit fills (another replica) from the log', async () => {
    const log = fakeLog();
    const feed = new ChangeFeed(log, { gapWaitMs: 10 });
    await feed.start();
    const got: number[] = [];
    feed.subscribeAll((events) => got.push(...events.map((e) => e.revision)));
    log.commit(ev(1, 'dm-b')); // committed elsewhere, never reported here
    log.commit(ev(2));
    log.report([ev(2)]);
    await settle();
    expect(got).toEqual([1, 2]);
    await feed.stop();
  });

  it('catches up on request (a NOTIFY) and never delivers twice', async () => {
    const log = fakeLog([ev(1)]);
    const feed = new ChangeFeed(log);
    await feed.start();
    const got: number[] = [];
    feed.subscribeAll((events) => got.push(...events.map((e) => e.revision)));
    for (const r of [2, 3, 4]) log.commit(ev(r));
    feed.requestCatchUp();
    feed.requestCatchUp();
    log.report([ev(3), ev(2)]);
    await settle();
    expect(got).toEqual([2, 3, 4]);
    await feed.stop();
  });

  it('builds each frame once and hands every subscriber the same bytes, batched per tick', async () => {
    const log = fakeLog();
    const feed = new ChangeFeed(log);
    await feed.start();
    const a: (readonly FeedEvent[])[] = [];
    const b: (readonly FeedEvent[])[] = [];
    feed.subscribe('dm-a', (events) => a.push(events));
    feed.subscribe('dm-a', (events) => b.push(events));
    feed.subscribe('dm-other', () => {
      throw new Error('not subscribed to dm-a');
    });
    for (const r of [1, 2]) log.commit(ev(r));
    log.report([ev(1), ev(2)]);
    await settle(5);
    expect(a).toHaveLength(1); // one batch for the tick
    expect(a[0]!.map((e) => e.revision)).toEqual([1, 2]);
    expect(a[0]![0]!.frame).toBe(b[0]![0]!.frame);
    expect(a[0]![0]!.frame.toString()).toBe('event: status\nid: 1\ndata: {"r":1}\n\n');
    await feed.stop();
  });

  it('reports the log unreadable and recovers', async () => {
    const log = fakeLog();
    let fail = true;
    const health: boolean[] = [];
    const feed = new ChangeFeed(
      {
        ...log,
        readEvents: async (after: number, limit: number) => {
          if (fail) throw new Error('connection lost');
          return log.events.filter((e) => e.revision > after).slice(0, limit);
        },
        onCommit: (l: CommitListener) => log.onCommit(l),
      },
      { onHealth: (h) => health.push(h) },
    );
    await feed.start();
    const got: number[] = [];
    feed.subscribeAll((events) => got.push(...events.map((e) => e.revision)));
    log.commit(ev(1));
    feed.requestCatchUp();
    await settle(20);
    expect(health).toEqual([false]);
    expect(feed.isHealthy).toBe(false);
    fail = false;
    await settle(700);
    expect(health).toEqual([false, true]);
    expect(got).toEqual([1]);
    await feed.stop();
  });
});
