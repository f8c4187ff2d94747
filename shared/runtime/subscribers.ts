// Who hears of every status change (shared/events): each runtime's list of event subscribers.
// Subscribers are quick and durable (they record a delivery, put an event on a bus, write a
// pipeline's destination), so that the outbox drains fast; see shared/events/dispatcher.ts.
import { type WebhookSubscriberDeps, webhookSubscriber } from '../events/deliveries.js';
import type { EventSubscriber } from '../events/dispatcher.js';

/** `npm start`'s subscribers: webhook deliveries, which its delivery pump sends. */
export function localSubscribers(deps: WebhookSubscriberDeps): EventSubscriber[] {
  return [webhookSubscriber(deps)];
}

/** The Lambda runtime's subscribers. */
export function awsSubscribers(): EventSubscriber[] {
  return [];
}
