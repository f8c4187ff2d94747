// Hands the outbox's events to their subscribers: in order per batch (batches side by side), at
// least once (a subscriber may see an event again after a crash or after another subscriber
// failed, and tells repeats apart by the event id), and acknowledges a batch's events once every
// subscriber has taken them.
//
// Subscribers are quick and durable (they record a webhook delivery, put an EventBridge event, write
// a pipeline's destination); a failure leaves the event for the next drain, so a subscriber must
// not fail for good on an event it can never take: it logs, counts and moves on instead.
import pLimit from 'p-limit';
import type { BatchRecord } from '../batch/model.js';
import { errorMessage, type Logger } from '../log.js';
import type { MetaStore } from '../ports.js';
import type { BatchEvent } from './model.js';

export interface EventSubscriber {
  /** For logs. */
  name: string;
  /** `batch` is the batch as it is now (it may have moved on since the event). */
  handle(event: BatchEvent, batch: BatchRecord): Promise<void>;
}

export interface DispatcherDeps {
  meta: Pick<MetaStore, 'listPendingEvents' | 'ackEvents'>;
  log: Logger;
}

/** Batches read from the outbox at a time. */
const PAGE = 100;
/** Batches whose events are being handed to the subscribers at once. */
const BATCHES_AT_ONCE = 8;

export class EventDispatcher {
  private draining: Promise<number> | undefined;
  private again = false;

  constructor(
    private readonly deps: DispatcherDeps,
    private readonly subscribers: readonly EventSubscriber[],
  ) {}

  /**
   * Delivers what the outbox holds; answers how many events were acknowledged. Drains do not
   * overlap: one asked for while another runs starts again once it ends.
   */
  drain(): Promise<number> {
    if (this.draining) {
      this.again = true;
      return this.draining;
    }
    this.draining = this.drainAll().finally(() => {
      this.draining = undefined;
      if (this.again) {
        this.again = false;
        void this.drain();
      }
    });
    return this.draining;
  }

  private async drainAll(): Promise<number> {
    let acknowledged = 0;
    for (;;) {
      const pending = await this.deps.meta.listPendingEvents(PAGE);
      // Order holds within a batch only: batches are delivered side by side, a few at a time.
      const limit = pLimit(BATCHES_AT_ONCE);
      const delivered = await Promise.all(pending.map(({ batch, events }) => limit(() => this.deliverBatch(batch, events))));
      const progress = delivered.reduce((sum, n) => sum + n, 0);
      acknowledged += progress;
      // A full page with nothing acknowledged is a page of failing subscribers: try again later.
      if (pending.length < PAGE || progress === 0) return acknowledged;
    }
  }

  /** Delivers one batch's events in order, stopping at the first a subscriber did not take. */
  private async deliverBatch(batch: BatchRecord, events: readonly BatchEvent[]): Promise<number> {
    const delivered: string[] = [];
    for (const event of events) {
      try {
        for (const subscriber of this.subscribers) await this.deliver(subscriber, event, batch);
      } catch {
        break; // later events of this batch wait, so that each subscriber sees them in order
      }
      delivered.push(event.id);
    }
    if (delivered.length > 0) await this.deps.meta.ackEvents(batch.id, delivered);
    return delivered.length;
  }

  private async deliver(subscriber: EventSubscriber, event: BatchEvent, batch: BatchRecord): Promise<void> {
    try {
      await subscriber.handle(event, batch);
    } catch (error) {
      this.deps.log.log('warn', 'event subscriber failed; the event is kept for the next drain', {
        subscriber: subscriber.name,
        eventId: event.id,
        type: event.type,
        batchId: event.batchId,
        error: errorMessage(error),
      });
      throw error;
    }
  }
}

/**
 * Drains soon after each status change (`notify`), and every `intervalMs` in case a change was made
 * by a process that stopped before it could drain (the outbox keeps the event meanwhile).
 */
export function startEventPump(dispatcher: EventDispatcher, options: { intervalMs: number; log: Logger }) {
  let stopped = false;
  let soon: NodeJS.Timeout | undefined;
  const run = () => {
    if (stopped) return;
    dispatcher.drain().catch((error: unknown) => options.log.log('warn', 'event drain failed', { error: errorMessage(error) }));
  };
  const timer = setInterval(run, options.intervalMs);
  timer.unref();
  run();
  return {
    notify(): void {
      if (stopped || soon) return;
      soon = setTimeout(() => {
        soon = undefined;
        run();
      }, 0);
    },
    async stop(): Promise<void> {
      stopped = true;
      clearInterval(timer);
      if (soon) clearTimeout(soon);
      await dispatcher.drain().catch(() => undefined);
    },
  };
}

export type EventPump = ReturnType<typeof startEventPump>;
