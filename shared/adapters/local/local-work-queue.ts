// The embedded WorkQueue: delivers chunk messages to a fixed number of concurrent workers, at
// least once. A message whose handler throws comes back after a delay, as an SQS message does
// after its visibility timeout; the handler is told when a delivery is the last (the worker then
// gives the chunk up rather than fail it again); after `maxReceives` deliveries a message that
// still fails is dropped and logged, the equivalent of SQS's dead-letter queue.
// Messages live in memory only: chunk state lives in the MetaStore, and the local lifecycle
// re-enqueues every unfinished chunk when the service starts again.
//
// Fair sharing: a free worker takes the next chunk by fair turns of projects, then of a project's
// batches (shared/schedule/fair-queue.ts), not the oldest chunk. And a project that has nothing
// running does not wait for a worker to come free: its chunk starts at once on one of up to
// `concurrency` more workers (so a small batch behind another project's big one starts as soon as
// it is validated; the route's request limiter then shares the upstream between them).
import type { ChunkMessage, WorkQueue } from '../../ports.js';
import { FairQueue } from '../../schedule/fair-queue.js';

export interface DeliveryInfo {
  /** This delivery's number, from 1. */
  receives: number;
  /** No delivery follows this one if it fails. */
  last: boolean;
}

export type ChunkHandler = (message: ChunkMessage, delivery: DeliveryInfo) => Promise<unknown>;

interface Delivery {
  message: ChunkMessage;
  receives: number;
}

export interface LocalWorkQueueOptions {
  concurrency: number;
  maxReceives?: number;
  redeliveryDelayMs?: number;
  onDeadLetter?: (message: ChunkMessage, error: unknown) => void;
}

export class LocalWorkQueue implements WorkQueue {
  private readonly waiting = new FairQueue<Delivery>();
  private readonly running = new Set<Promise<void>>();
  /** Chunks running, by project. */
  private readonly runningOf = new Map<string, number>();
  private readonly delayed = new Set<NodeJS.Timeout>();
  private handler: ChunkHandler | undefined;
  private stopped = false;

  constructor(private readonly options: LocalWorkQueueOptions) {}

  async enqueue(messages: ChunkMessage[], options: { delayMs?: number } = {}): Promise<void> {
    if (options.delayMs) {
      if (this.stopped) return;
      const timer = setTimeout(() => {
        this.delayed.delete(timer);
        void this.enqueue(messages);
      }, options.delayMs);
      this.delayed.add(timer);
      return;
    }
    for (const message of messages) this.waiting.push(tenantOf(message), { message, receives: 0 });
    this.pump();
  }

  start(handler: ChunkHandler): void {
    this.handler = handler;
    this.pump();
  }

  /** Stops delivering and waits for the handlers that are running. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const timer of this.delayed) clearTimeout(timer);
    this.delayed.clear();
    await Promise.allSettled([...this.running]);
  }

  get depth(): number {
    return this.waiting.size + this.delayed.size + this.running.size;
  }

  /** Chunks waiting for a worker, of one project. */
  waitingOf(project: string): number {
    return this.waiting.waitingOf(project);
  }

  private pump(): void {
    const { concurrency } = this.options;
    while (!this.stopped && this.handler && this.waiting.size > 0) {
      const delivery =
        this.running.size < concurrency
          ? this.waiting.shift()
          : this.running.size < 2 * concurrency
            ? this.waiting.shiftWhere((project) => !this.runningOf.get(project))
            : undefined;
      if (!delivery) return;
      this.run(this.handler, delivery);
    }
  }

  private run(handler: ChunkHandler, delivery: Delivery): void {
    const project = delivery.message.project ?? '';
    delivery.receives += 1;
    this.runningOf.set(project, (this.runningOf.get(project) ?? 0) + 1);
    const run = this.deliver(handler, delivery).finally(() => {
      this.running.delete(run);
      const left = (this.runningOf.get(project) ?? 1) - 1;
      if (left > 0) this.runningOf.set(project, left);
      else this.runningOf.delete(project);
      this.pump();
    });
    this.running.add(run);
  }

  private async deliver(handler: ChunkHandler, delivery: Delivery): Promise<void> {
    try {
      const maxReceives = this.options.maxReceives ?? 5;
      await handler(delivery.message, { receives: delivery.receives, last: delivery.receives >= maxReceives });
    } catch (error) {
      if (delivery.receives >= (this.options.maxReceives ?? 5)) {
        this.options.onDeadLetter?.(delivery.message, error);
        return;
      }
      const timer = setTimeout(
        () => {
          this.delayed.delete(timer);
          this.waiting.push(tenantOf(delivery.message), delivery);
          this.pump();
        },
        (this.options.redeliveryDelayMs ?? 1_000) * delivery.receives,
      );
      this.delayed.add(timer);
    }
  }
}

function tenantOf(message: ChunkMessage) {
  return { project: message.project ?? '', batchId: message.batchId, ...(message.priority ? { priority: message.priority } : {}) };
}
