// Who hears of every status change (shared/events): each runtime's list of event subscribers.
// Subscribers are quick and durable (they record a delivery, put an event on a bus, write a
// pipeline's destination), so that the outbox drains fast; see shared/events/dispatcher.ts.
import { eventBusSubscriber } from '../events/bus.js';
import { type WebhookSubscriberDeps, webhookSubscriber } from '../events/deliveries.js';
import type { EventSubscriber } from '../events/dispatcher.js';
import { type DestinationDeps, destinationSubscriber } from '../pipelines/destinations.js';
import type { DeliveryQueue, EventBus } from '../ports.js';

/**
 * `npm start`'s subscribers: pipeline destinations (when there are pipelines), then webhook
 * deliveries, which its delivery pump sends. Destinations come first: a batch's results are in its
 * destination by the time a receiver hears that it ended.
 */
export function localSubscribers(deps: WebhookSubscriberDeps & { destinations?: DestinationDeps }): EventSubscriber[] {
  return [...(deps.destinations ? [destinationSubscriber(deps.destinations)] : []), webhookSubscriber(deps)];
}

/**
 * The Lambda runtime's subscribers: pipeline destinations (where the function has pipelines), EventBridge (every status change), and webhook deliveries,
 * recorded and put on the delivery queue for the delivery function (the API never sends them).
 */
export function awsSubscribers(deps: {
  meta: WebhookSubscriberDeps['meta'];
  clock: WebhookSubscriberDeps['clock'];
  bus?: EventBus;
  deliveries?: DeliveryQueue;
  /** Pipeline destinations, first (see localSubscribers). */
  destinations?: DestinationDeps;
}): EventSubscriber[] {
  const { bus, deliveries } = deps;
  return [
    ...(deps.destinations ? [destinationSubscriber(deps.destinations)] : []),
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
