import { describe, expect, it } from 'vitest';
import type { BatchRecord } from '../../../shared/batch/model.js';
import { EventDispatcher, type EventSubscriber } from '../../../shared/events/dispatcher.js';
import { type BatchEvent, batchEvent } from '../../../shared/events/model.js';
import { silentLogger } from '../../../shared/log.js';
import type { MetaStore } from '../../../shared/ports.js';
import { batchRecord } from '../../adapters/meta-store-contract.js';

/** An outbox over a Map, acknowledging as the DynamoDB adapter does (only the oldest events). */
function fakeOutbox() {
  const outbox = new Map<string, { batch: BatchRecord; events: BatchEvent[] }>();
  const meta: Pick<MetaStore, 'listPendingEvents' | 'ackEvents'> = {
    listPendingEvents: async (limit) => [...outbox.values()].filter((p) => p.events.length > 0).slice(0, limit),
    ackEvents: async (batchId, ids) => {
      const pending = outbox.get(batchId);
      if (pending && ids.every((id, i) => pending.events[i]?.id === id)) pending.events.splice(0, ids.length);
    },
  };
  const append = (batch: BatchRecord, event: BatchEvent) => {
    const pending = outbox.get(batch.id) ?? { batch, events: [] };
    pending.events.push(event);
    outbox.set(batch.id, pending);
  };
  return { meta, outbox, append };
}

function recorder(name: string, failFor: (event: BatchEvent) => boolean = () => false) {
  const seen: string[] = [];
  const subscriber: EventSubscriber = {
    name,
    handle: async (event) => {
      if (failFor(event)) throw new Error(`${name} is down`);
      seen.push(event.type);
    },
  };
  return { subscriber, seen };
}

describe('EventDispatcher', () => {
  it('hands every event to every subscriber in order, then acknowledges them', async () => {
    const { meta, outbox, append } = fakeOutbox();
    const batch = batchRecord();
    append(batch, batchEvent(batch, 'validating', null, 1));
    append(batch, batchEvent(batch, 'in_progress', 'validating', 2));
    const [a, b] = [recorder('a'), recorder('b')];
    const dispatcher = new EventDispatcher({ meta, log: silentLogger }, [a.subscriber, b.subscriber]);
    expect(await dispatcher.drain()).toBe(2);
    expect(a.seen).toEqual(['batch.created', 'batch.in_progress']);
    expect(b.seen).toEqual(['batch.created', 'batch.in_progress']);
    expect(outbox.get(batch.id)?.events).toEqual([]);
  });

  it('keeps an event a subscriber failed on, and the later ones of its batch, for the next drain', async () => {
    const { meta, outbox, append } = fakeOutbox();
    const [one, two] = [batchRecord(), batchRecord()];
    append(one, batchEvent(one, 'validating', null, 1));
    append(one, batchEvent(one, 'failed', 'validating', 2));
    append(two, batchEvent(two, 'validating', null, 1));
    let down = true;
    const flaky = recorder('flaky', (event) => down && event.type === 'batch.failed');
    const dispatcher = new EventDispatcher({ meta, log: silentLogger }, [flaky.subscriber]);
    expect(await dispatcher.drain()).toBe(2);
    expect(outbox.get(one.id)?.events.map((e) => e.type)).toEqual(['batch.failed']);
    expect(outbox.get(two.id)?.events).toEqual([]);
    down = false;
    expect(await dispatcher.drain()).toBe(1);
    expect(flaky.seen).toEqual(['batch.created', 'batch.created', 'batch.failed']);
  });

  it('runs one drain at a time and drains again for a call made meanwhile', async () => {
    const { meta, append } = fakeOutbox();
    const batch = batchRecord();
    const seen = recorder('seen');
    const dispatcher = new EventDispatcher({ meta, log: silentLogger }, [seen.subscriber]);
    append(batch, batchEvent(batch, 'validating', null, 1));
    const first = dispatcher.drain();
    append(batch, batchEvent(batch, 'in_progress', 'validating', 2));
    await Promise.all([first, dispatcher.drain()]);
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(seen.seen).toEqual(['batch.created', 'batch.in_progress']);
  });
});
