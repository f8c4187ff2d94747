// Behaviour every WorkQueue must have, whatever carries the messages: every chunk message is
// delivered, intact, at least once; one whose handler failed comes back; one that keeps failing
// is parked (a dead letter) after a bounded number of deliveries. An adapter's test file calls
// workQueueContract() with a setup that builds a fresh queue and its consumer.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChunkMessage, WorkQueue } from '../../shared/ports.js';

export interface WorkQueueSetup {
  queue: WorkQueue;
  /** Delivers messages to `handler` from now on, as the worker gets them; a handler that throws leaves its message to come back. */
  consume(handler: (message: ChunkMessage) => Promise<void>): void;
  /** The messages parked after `maxReceives` failed deliveries. */
  deadLetters(): Promise<ChunkMessage[]>;
  maxReceives: number;
  close(): Promise<void>;
}

const message = (batchId: string, index: number): ChunkMessage => ({
  batchId,
  inputBlobKey: `files/file-${batchId}`,
  chunk: { index, start: index * 1_000, end: index * 1_000 + 1_000, requests: 500 },
});

async function until(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`${what}: not after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export function workQueueContract(name: string, setup: () => Promise<WorkQueueSetup>): void {
  describe(`WorkQueue contract: ${name}`, () => {
    let env: WorkQueueSetup;
    /** Per batch id: what the handler does with its messages, and what it was given. */
    const behaviour = new Map<string, (message: ChunkMessage, delivery: number) => void>();
    const deliveries = new Map<string, ChunkMessage[]>();
    const key = (m: ChunkMessage) => `${m.batchId}/${m.chunk.index}`;

    beforeAll(async () => {
      env = await setup();
      env.consume(async (m) => {
        const seen = deliveries.get(key(m)) ?? [];
        seen.push(m);
        deliveries.set(key(m), seen);
        behaviour.get(m.batchId)?.(m, seen.length);
      });
    });
    afterAll(async () => {
      await env?.close();
    });

    it('delivers every message of a large enqueue, intact, at least once', async () => {
      const batchId = `batch_${randomUUID().slice(0, 8)}`;
      const messages = Array.from({ length: 25 }, (_, i) => message(batchId, i));
      await env.queue.enqueue(messages);
      await until(() => messages.every((m) => deliveries.has(key(m))), 'all 25 delivered');
      for (const m of messages) expect(deliveries.get(key(m))![0]).toEqual(m);
    });

    it('delivers a message again after its handler failed, until it succeeds', async () => {
      const batchId = `batch_${randomUUID().slice(0, 8)}`;
      behaviour.set(batchId, (_m, delivery) => {
        if (delivery < 2) throw new Error('the worker crashed');
      });
      const m = message(batchId, 0);
      await env.queue.enqueue([m]);
      await until(() => (deliveries.get(key(m))?.length ?? 0) >= 2, 'delivered twice');
      expect(deliveries.get(key(m))!.every((copy) => JSON.stringify(copy) === JSON.stringify(m))).toBe(true);
      expect(await env.deadLetters()).not.toContainEqual(m);
    });

    it('delivers a message enqueued with a delay only once the delay has passed', async () => {
      const batchId = `batch_${randomUUID().slice(0, 8)}`;
      const m = message(batchId, 0);
      const sentAt = Date.now();
      let deliveredAt = 0;
      behaviour.set(batchId, () => {
        deliveredAt ||= Date.now();
      });
      await env.queue.enqueue([m], { delayMs: 1_000 });
      await until(() => deliveries.has(key(m)), 'delivered after its delay');
      expect(deliveredAt - sentAt).toBeGreaterThanOrEqual(900);
      expect(deliveries.get(key(m))![0]).toEqual(m);
    });

    it('parks a message that keeps failing after a bounded number of deliveries', async () => {
      const batchId = `batch_${randomUUID().slice(0, 8)}`;
      behaviour.set(batchId, () => {
        throw new Error('this chunk always fails');
      });
      const m = message(batchId, 0);
      await env.queue.enqueue([m]);
      let parked: ChunkMessage[] = [];
      await until(async () => {
        parked = [...parked, ...(await env.deadLetters())];
        return parked.some((p) => p.batchId === batchId);
      }, 'a dead letter');
      expect(parked.filter((p) => p.batchId === batchId)).toEqual([m]);
      expect(deliveries.get(key(m))!.length).toBe(env.maxReceives);
    });
  });
}
