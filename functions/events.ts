// The events function, invoked by the table's stream when a batch's outbox holds events (what the
// stream records say is not needed: the drain reads the outbox) and on a one-minute schedule:
// drains the status-change outbox to the subscribers (EventBridge, webhook deliveries onto their
// queue), and puts back on the queue any delivery that is overdue (its message was lost, or its
// sender died holding it): a repeat is harmless, an attempt is claimed once
// (shared/events/deliveries.ts).
import type { WebhookDeliveryRecord } from '../shared/events/webhook-model.js';
import { lambdaHandler, MetricUnit, metrics } from './observability.js';
import { runtime } from './runtime.js';

/** A delivery this late is one no message will bring: it goes on the queue again. */
export const OVERDUE_MS = 60_000;
const PAGE = 100;
/** Overdue deliveries put back per run, at most. */
const MAX_REQUEUED = 1_000;

export interface EventsResult {
  acknowledged: number;
  requeued: number;
}

export const handler = lambdaHandler('events', async (): Promise<EventsResult> => {
  const rt = await runtime();
  const acknowledged = await rt.domain.events.drain();
  let requeued = 0;
  if (rt.deliveryQueue) {
    const now = rt.clock.now();
    let after: WebhookDeliveryRecord | undefined;
    while (requeued < MAX_REQUEUED) {
      const overdue = await rt.meta.listDueWebhookDeliveries(now - OVERDUE_MS, PAGE, after);
      if (overdue.length === 0) break;
      await rt.deliveryQueue.schedule(
        overdue.map((d) => ({ id: d.id, atMs: now })),
        now,
      );
      requeued += overdue.length;
      if (overdue.length < PAGE) break;
      after = overdue.at(-1);
    }
  }
  const m = metrics();
  m.addMetric('EventsDispatched', MetricUnit.Count, acknowledged);
  if (requeued > 0) m.addMetric('WebhookDeliveriesRequeued', MetricUnit.Count, requeued);
  return { acknowledged, requeued };
});
