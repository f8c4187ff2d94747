// Who hears of every status change (shared/events): each runtime's list of event subscribers.
// Subscribers are quick and durable (they record a delivery, put an event on a bus, write a
// pipeline's destination), so that the outbox drains fast; see shared/events/dispatcher.ts.
import { eventBusSubscriber } from '../events/bus.js';
import { type WebhookSubscriberDeps, webhookSubscriber } from '../events/deliveries.js';
import type { EventSubscriber } from '../events/dispatcher.js';
import type { DeliveryQueue, EventBus } from '../ports.js';

/** `npm start`'s subscribers: webhook deliveries, which its delivery pump sends. */
export function localSubscribers(deps: WebhookSubscriberDeps): EventSubscriber[] {
  return [webhookSubscriber(deps)];
}

/**
 * The Lambda runtime's subscribers: EventBridge (every status change), and webhook deliveries,
 * recorded and put on the delivery queue for the delivery function (the API never sends them).
 */
export function awsSubscribers(deps: {
  meta: WebhookSubscriberDeps['meta'];
  clock: WebhookSubscriberDeps['clock'];
  bus?: EventBus;
  deliveries?: DeliveryQueue;
}): EventSubscriber[] {
  const { bus, deliveries } = deps;
  return [
    ...(bus ? [eventBusSubscriber(bus)] : []),
    ...(deliveries
      ? [
          webhookSubscriber({
            meta: deps.meta,
            clock: deps.clock,
            onDeliveries: (recorded) =>
              deliveries.schedule(
                recorded.map((d) => ({ id: d.id, atMs: d.nextAttemptAtMs })),
                deps.clock.now(),
              ),
          }),
        ]
      : []),
  ];
}
