import { describe, expect, it } from 'vitest';
import { LocalWorkQueue } from '../../../shared/adapters/local/local-work-queue.js';
import type { ChunkMessage } from '../../../shared/ports.js';
import { dueChunks, successorChunk } from '../../../shared/schedule/chunk-window.js';
import { FairQueue, type Tenant } from '../../../shared/schedule/fair-queue.js';
import { AdaptiveConcurrency } from '../../../shared/upstream/adaptive-concurrency.js';

const tenant = (project: string, batchId = `${project}-1`, priority?: Tenant['priority']): Tenant => ({
  project,
  batchId,
  ...(priority ? { priority } : {}),
});

function drain<T>(queue: FairQueue<T>): T[] {
  const out: T[] = [];
  for (let item = queue.shift(); item !== undefined; item = queue.shift()) out.push(item);
  return out;
}

describe('FairQueue', () => {
  it('gives projects one item a turn: a small backlog is not stuck behind a big one', () => {
    const queue = new FairQueue<string>();
    for (let i = 0; i < 1000; i++) queue.push(tenant('A'), `a${i}`);
    for (let i = 0; i < 3; i++) queue.push(tenant('B'), `b${i}`);
    const order = drain(queue);
    expect(order.slice(0, 6)).toEqual(['a0', 'b0', 'a1', 'b1', 'a2', 'b2']);
    expect(order).toHaveLength(1003);
    expect(queue.size).toBe(0);
  });

  it('keeps each batch first in, first out', () => {
    const queue = new FairQueue<string>();
    for (let i = 0; i < 5; i++) queue.push(tenant('A'), `a${i}`);
    for (let i = 0; i < 5; i++) queue.push(tenant('B'), `b${i}`);
    const order = drain(queue);
    expect(order.filter((x) => x.startsWith('a'))).toEqual(['a0', 'a1', 'a2', 'a3', 'a4']);
    expect(order.filter((x) => x.startsWith('b'))).toEqual(['b0', 'b1', 'b2', 'b3', 'b4']);
  });

  it('a newcomer waits one round of those already waiting, not for their backlogs', () => {
    const queue = new FairQueue<string>();
    for (let i = 0; i < 100; i++) {
      queue.push(tenant('A'), `a${i}`);
      queue.push(tenant('B'), `b${i}`);
      queue.push(tenant('C'), `c${i}`);
    }
    expect(queue.shift()).toBe('a0');
    queue.push(tenant('D'), 'd0');
    // The round that was under way ends (B, C, then A's next turn), then D's turn.
    expect([queue.shift(), queue.shift(), queue.shift(), queue.shift()]).toEqual(['b0', 'c0', 'a1', 'd0']);
  });

  it('shares a project between its batches, by their priority', () => {
    const queue = new FairQueue<string>();
    for (let i = 0; i < 100; i++) queue.push(tenant('A', 'big'), 'big');
    for (let i = 0; i < 100; i++) queue.push(tenant('A', 'high', 'high'), 'high');
    for (let i = 0; i < 100; i++) queue.push(tenant('A', 'low', 'low'), 'low');
    const first = drain(queue).slice(0, 70);
    const share = (name: string) => first.filter((x) => x === name).length;
    // Weights 4 : 2 : 1.
    expect(share('high')).toBe(40);
    expect(share('big')).toBe(20);
    expect(share('low')).toBe(10);
  });

  it('starves nobody: every project with waiting items is served within one round', () => {
    const queue = new FairQueue<string>();
    const projects = ['A', 'B', 'C', 'D', 'E'];
    for (const p of projects) for (let i = 0; i < 50; i++) queue.push(tenant(p, `${p}-${i % 3}`), p);
    let longestGap = 0;
    const lastSeen = new Map<string, number>();
    drain(queue).forEach((p, at) => {
      if (lastSeen.has(p)) longestGap = Math.max(longestGap, at - lastSeen.get(p)!);
      lastSeen.set(p, at);
    });
    expect(longestGap).toBeLessThanOrEqual(projects.length);
  });

  it('puts a retry first in its own batch line, and shiftWhere serves only the projects it accepts', () => {
    const queue = new FairQueue<string>();
    queue.push(tenant('A'), 'a0');
    queue.push(tenant('A'), 'a1');
    queue.push(tenant('A'), 'retry', { first: true });
    queue.push(tenant('B'), 'b0');
    expect(queue.shiftWhere((p) => p === 'B')).toBe('b0');
    expect(queue.shiftWhere((p) => p === 'B')).toBeUndefined();
    expect(drain(queue)).toEqual(['retry', 'a0', 'a1']);
  });
});

describe('the route limiter (AdaptiveConcurrency)', () => {
  const clock = { now: () => Date.now(), sleep: async () => {} };

  it('hands free slots out in fair turns: another batch never waits behind a batch’s waiting requests', async () => {
    const slots = new AdaptiveConcurrency({ max: 2, min: 2, clock });
    const order: string[] = [];
    const held = [await slots.acquire(false, tenant('A')), await slots.acquire(false, tenant('A'))];
    const waits: Promise<void>[] = [];
    const take = (who: string) =>
      slots.acquire(false, tenant(who)).then((permit) => {
        order.push(who);
        slots.release(permit);
      });
    for (let i = 0; i < 50; i++) waits.push(take('A'));
    for (let i = 0; i < 4; i++) waits.push(take('B'));
    expect(slots.waiting).toBe(54);
    for (const permit of held) slots.release(permit);
    await Promise.all(waits);
    // B's four requests are among the first ten to get a slot, not the last four.
    expect(order.slice(0, 10).filter((x) => x === 'B')).toHaveLength(4);
    expect(slots.inFlight).toBe(0);
  });
});

describe('the chunk window', () => {
  const chunks = Array.from({ length: 10 }, (_, index) => ({ index, start: index * 10, end: index * 10 + 10, requests: 1 }));

  it('puts the first `window` chunks on the queue, then the one `window` after each recorded chunk', () => {
    expect(dueChunks(chunks, new Set(), 3).map((c) => c.index)).toEqual([0, 1, 2]);
    expect(successorChunk(chunks, 1, new Set([1]), 3)?.index).toBe(4);
    expect(successorChunk(chunks, 8, new Set([8]), 3)).toBeUndefined();
  });

  it('after a restart, enqueues exactly the chunks that were due: nothing lost, nothing run early', () => {
    // Recorded 0, 1 and 4: chunk 3 (after 0) and 4's successor 7 are due, as are 2 and 4 ... not 4 (recorded).
    expect(dueChunks(chunks, new Set([0, 1, 4]), 3).map((c) => c.index)).toEqual([2, 3, 7]);
    expect(dueChunks(chunks, new Set([0, 1, 4]), 100).map((c) => c.index)).toEqual([2, 3, 5, 6, 7, 8, 9]);
  });
});

describe('LocalWorkQueue', () => {
  const message = (project: string, batchId: string, index: number): ChunkMessage => ({
    batchId,
    project,
    inputBlobKey: `files/${batchId}`,
    chunk: { index, start: 0, end: 1, requests: 1 },
  });

  it('starts a project that has nothing running at once, even with every worker busy', async () => {
    const queue = new LocalWorkQueue({ concurrency: 2 });
    const started: string[] = [];
    const releases: (() => void)[] = [];
    queue.start(async (m) => {
      started.push(`${m.project}:${m.chunk.index}`);
      await new Promise<void>((resolve) => releases.push(resolve));
    });
    await queue.enqueue([0, 1, 2, 3, 4].map((i) => message('A', 'batch_a', i)));
    expect(started).toEqual(['A:0', 'A:1']);
    await queue.enqueue([message('B', 'batch_b', 0), message('B', 'batch_b', 1)]);
    // B's first chunk runs beside A's two; its second waits for a free worker like anyone else.
    expect(started).toEqual(['A:0', 'A:1', 'B:0']);
    // Freed workers go by turns: B's second chunk comes after one of A's, not after A's backlog.
    releases.shift()!();
    releases.shift()!();
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(started.slice(3)).toEqual(['A:2']);
    releases.shift()!();
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(started.slice(4)).toEqual(['B:1']);
    for (const release of releases.splice(0)) release();
    await queue.stop();
  });

  it('delivers a failed chunk again, in its project’s turn', async () => {
    const queue = new LocalWorkQueue({ concurrency: 1, redeliveryDelayMs: 1 });
    const seen: string[] = [];
    let failOnce = true;
    queue.start(async (m, delivery) => {
      seen.push(`${m.project}:${m.chunk.index}#${delivery.receives}`);
      if (m.project === 'A' && failOnce) {
        failOnce = false;
        throw new Error('boom');
      }
    });
    await queue.enqueue([message('A', 'batch_a', 0), message('B', 'batch_b', 0)]);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(seen).toContain('A:0#2');
    expect(seen).toContain('B:0#1');
    await queue.stop();
  });
});
