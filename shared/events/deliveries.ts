// Webhook deliveries: from a batch's status-change event to a signed request its project's
// endpoints answered 2xx, at least once, surviving restarts.
//
//   event (outbox) ─ webhookSubscriber ─> one delivery record per subscribed endpoint (MetaStore)
//   due delivery ─ attemptDelivery ─> claim ─> sign + POST ─> 2xx: removed
//                                                           └> otherwise: retried later, or given up
//
// A failed attempt (non-2xx, timeout, refused connection, a blocked address) is retried after an
// exponential backoff with jitter (RETRY_BASE, doubling, capped at MAX_RETRY_DELAY_MS), for
// WEBHOOK_RETRY_FOR (72 h) since the delivery was recorded; then it is given up, logged and counted.
// Each attempt is signed anew (webhook-timestamp is the attempt's), with the endpoint's secrets as
// they are then; a deleted endpoint's deliveries are dropped.
//
// Who attempts: `npm start`'s delivery pump (startDeliveryPump), and in AWS the delivery Lambda fed
// by an SQS queue (functions/webhook-delivery.ts). A claim (a compare-and-set that moves the
// delivery's due time to the claim's end) keeps two senders from making one attempt twice; a
// sender that dies mid-attempt leaves a claim that lapses, and the delivery is due again.
import type { BatchRecord } from '../batch/model.js';
import { errorMessage, type Logger } from '../log.js';
import type { Clock, MetaStore } from '../ports.js';
import type { EventSubscriber } from './dispatcher.js';
import type { BatchEvent } from './model.js';
import {
  deliveryId,
  signingSecrets,
  type WebhookDeliveryRecord,
  type WebhookEndpointRecord,
  webhookEventPayload,
} from './webhook-model.js';
import type { WebhookSender } from './webhook-sender.js';

/** No wait between two attempts is longer than this. */
export const MAX_RETRY_DELAY_MS = 3 * 3_600_000;

export interface RetryPolicy {
  baseMs: number;
  forMs: number;
}

/** The wait after the `attempts`-th failed attempt: base·2^(attempts-1), capped, with jitter in [½, 1]. */
export function retryDelayMs(attempts: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const full = Math.min(policy.baseMs * 2 ** Math.min(attempts - 1, 40), MAX_RETRY_DELAY_MS);
  return Math.round(full * (0.5 + random() / 2));
}

/** Endpoints of the project that want this event type. */
async function subscribedEndpoints(meta: Pick<MetaStore, 'listWebhookEndpoints'>, project: string, type: string) {
  const endpoints: WebhookEndpointRecord[] = [];
  let after: string | undefined;
  for (;;) {
    const page = await meta.listWebhookEndpoints(project, { limit: 100, ...(after === undefined ? {} : { after }) });
    endpoints.push(...page.items.filter((endpoint) => endpoint.eventTypes.includes(type)));
    if (!page.hasMore || page.items.length === 0) return endpoints;
    after = page.items.at(-1)!.id;
  }
}

export interface WebhookSubscriberDeps {
  meta: Pick<MetaStore, 'listWebhookEndpoints' | 'putWebhookDelivery'>;
  clock: Clock;
  /**
   * Told of the deliveries an event made (again when the event is taken again): locally the pump
   * looks at once; in AWS each goes on the delivery queue. A failure leaves the event in its outbox.
   */
  onDeliveries?: (deliveries: WebhookDeliveryRecord[]) => Promise<void> | void;
}

/** The events subscriber that records a delivery for each endpoint subscribed to the event's type. */
export function webhookSubscriber(deps: WebhookSubscriberDeps): EventSubscriber {
  return {
    name: 'webhooks',
    async handle(event: BatchEvent, _batch: BatchRecord): Promise<void> {
      const endpoints = await subscribedEndpoints(deps.meta, event.project, event.type);
      if (endpoints.length === 0) return;
      const now = deps.clock.now();
      const payload = webhookEventPayload(event);
      const deliveries = endpoints.map(
        (endpoint): WebhookDeliveryRecord => ({
          id: deliveryId(event.id, endpoint.id),
          project: event.project,
          endpointId: endpoint.id,
          eventId: event.id,
          eventType: event.type,
          payload,
          attempts: 0,
          nextAttemptAtMs: now,
          createdAtMs: now,
          lastError: null,
        }),
      );
      // A repeat of the event finds its deliveries there already: putWebhookDelivery changes nothing.
      for (const delivery of deliveries) await deps.meta.putWebhookDelivery(delivery);
      await deps.onDeliveries?.(deliveries);
    },
  };
}

export interface DeliveryStats {
  delivered: number;
  retried: number;
  givenUp: number;
  dropped: number;
}

export const newDeliveryStats = (): DeliveryStats => ({ delivered: 0, retried: 0, givenUp: 0, dropped: 0 });

export interface DeliveryDeps {
  meta: Pick<
    MetaStore,
    'claimWebhookDelivery' | 'getWebhookDelivery' | 'getWebhookEndpoint' | 'retryWebhookDelivery' | 'finishWebhookDelivery'
  >;
  clock: Clock;
  log: Logger;
  sender: WebhookSender;
  retry: RetryPolicy;
  /** How long a claim holds: longer than one attempt can take. */
  claimMs: number;
  stats?: DeliveryStats;
  random?: () => number;
}

export type AttemptOutcome =
  | { outcome: 'delivered' | 'given_up' | 'dropped' | 'missing' }
  /** `retry`: failed, due again at `nextAttemptAtMs`. `not_due`: not due yet, or another sender holds it. */
  | { outcome: 'retry' | 'not_due'; nextAttemptAtMs: number };

/** One attempt at one delivery, if it is due. */
export async function attemptDelivery(deps: DeliveryDeps, id: string): Promise<AttemptOutcome> {
  const { meta, clock, log } = deps;
  const startedAt = clock.now();
  const delivery = await meta.claimWebhookDelivery(id, startedAt, startedAt + deps.claimMs);
  if (!delivery) {
    const current = await meta.getWebhookDelivery(id);
    return current ? { outcome: 'not_due', nextAttemptAtMs: current.nextAttemptAtMs } : { outcome: 'missing' };
  }
  const fields = { deliveryId: delivery.id, endpointId: delivery.endpointId, eventId: delivery.eventId, type: delivery.eventType };
  const endpoint = await meta.getWebhookEndpoint(delivery.project, delivery.endpointId);
  if (!endpoint) {
    await meta.finishWebhookDelivery(delivery.id);
    if (deps.stats) deps.stats.dropped++;
    log.log('info', 'webhook delivery dropped: its endpoint was deleted', fields);
    return { outcome: 'dropped' };
  }
  const now = clock.now();
  const answer = await deps.sender.send(
    endpoint.url,
    signingSecrets(endpoint, now),
    { id: delivery.eventId, payload: delivery.payload },
    now,
  );
  const attempts = delivery.attempts + 1;
  if (answer.ok) {
    await meta.finishWebhookDelivery(delivery.id);
    if (deps.stats) deps.stats.delivered++;
    log.log('info', 'webhook delivered', { ...fields, attempts, status: answer.status });
    return { outcome: 'delivered' };
  }
  const error = answer.error ?? 'failed';
  const next = clock.now() + retryDelayMs(attempts, deps.retry, deps.random);
  if (next > delivery.createdAtMs + deps.retry.forMs) {
    await meta.finishWebhookDelivery(delivery.id);
    if (deps.stats) deps.stats.givenUp++;
    log.log('error', 'webhook delivery given up', { ...fields, attempts, error, metric: 'WebhookDeliveriesGivenUp' });
    return { outcome: 'given_up' };
  }
  await meta.retryWebhookDelivery(delivery.id, { attempts, nextAttemptAtMs: next, lastError: error });
  if (deps.stats) deps.stats.retried++;
  log.log('warn', 'webhook delivery failed; it will be retried', { ...fields, attempts, error, retryInMs: next - clock.now() });
  return { outcome: 'retry', nextAttemptAtMs: next };
}

export interface DeliveryPumpOptions {
  intervalMs: number;
  /** Attempts in flight at once, over all endpoints. */
  concurrency: number;
  /** Attempts in flight at once to one endpoint: a slow or dead receiver holds at most this many. */
  perEndpoint: number;
  meta: Pick<MetaStore, 'listDueWebhookDeliveries'>;
}

/** Pages of due deliveries looked through per scan, so that one endpoint's backlog cannot hide another's. */
const PAGES_PER_SCAN = 20;
const PAGE = 100;
/** Due deliveries held in memory, waiting for a free slot of their endpoint. */
const BUFFER_LIMIT = PAGES_PER_SCAN * PAGE;

/**
 * `npm start`'s sender: attempts due deliveries with a bound in flight overall and per endpoint,
 * taking turns between endpoints. Deliveries it is told of (`offer`) and those a scan of the store
 * finds (every `intervalMs`, for retries and what an earlier run left) wait in a bounded buffer, so
 * a finished attempt starts the next without reading the store again: a backlog of n deliveries
 * for one endpoint costs n attempts, not n scans of the backlog.
 */
export function startDeliveryPump(deps: DeliveryDeps, options: DeliveryPumpOptions) {
  // Attempts start only while fewer than `concurrency` are in flight (dispatch), so this set is the bound.
  const inFlight = new Set<string>();
  const perEndpoint = new Map<string, number>();
  /** Due deliveries by endpoint, in the order the endpoints take turns (one starts, it goes last). */
  const waiting = new Map<string, WebhookDeliveryRecord[]>();
  const buffered = new Set<string>();
  /** The store may hold due deliveries the buffer had no room for. */
  let storeHasMore = false;
  const running = new Set<Promise<unknown>>();
  let stopped = false;
  let scanning: Promise<void> | undefined;
  let again = false;

  /** Buffers a due delivery; false when the buffer is full. */
  const hold = (delivery: WebhookDeliveryRecord): boolean => {
    if (inFlight.has(delivery.id) || buffered.has(delivery.id)) return true;
    if (buffered.size >= BUFFER_LIMIT) return false;
    buffered.add(delivery.id);
    const queue = waiting.get(delivery.endpointId);
    if (queue) queue.push(delivery);
    else waiting.set(delivery.endpointId, [delivery]);
    return true;
  };

  const start = (delivery: WebhookDeliveryRecord) => {
    inFlight.add(delivery.id);
    perEndpoint.set(delivery.endpointId, (perEndpoint.get(delivery.endpointId) ?? 0) + 1);
    const attempt = attemptDelivery(deps, delivery.id)
      .catch((error: unknown) =>
        deps.log.log('warn', 'webhook delivery attempt failed', { deliveryId: delivery.id, error: errorMessage(error) }),
      )
      .finally(() => {
        inFlight.delete(delivery.id);
        const left = (perEndpoint.get(delivery.endpointId) ?? 1) - 1;
        if (left > 0) perEndpoint.set(delivery.endpointId, left);
        else perEndpoint.delete(delivery.endpointId);
        running.delete(attempt);
        if (stopped) return;
        dispatch();
        if (buffered.size === 0 && storeHasMore) scan();
      });
    running.add(attempt);
  };

  /** Starts buffered deliveries while slots are free, one endpoint's turn after another's. */
  function dispatch(): void {
    let started = true;
    while (started && !stopped && inFlight.size < options.concurrency) {
      started = false;
      for (const [endpointId, queue] of waiting) {
        if (inFlight.size >= options.concurrency) return;
        if ((perEndpoint.get(endpointId) ?? 0) >= options.perEndpoint) continue;
        const delivery = queue.shift()!;
        buffered.delete(delivery.id);
        waiting.delete(endpointId);
        if (queue.length > 0) waiting.set(endpointId, queue);
        start(delivery);
        started = true;
      }
    }
  }

  async function scanStore(): Promise<void> {
    let after: WebhookDeliveryRecord | undefined;
    const now = deps.clock.now();
    storeHasMore = false;
    for (let page = 0; page < PAGES_PER_SCAN && !stopped; page++) {
      const due = await options.meta.listDueWebhookDeliveries(now, PAGE, after);
      for (const delivery of due) {
        if (!hold(delivery)) {
          storeHasMore = true;
          break;
        }
      }
      dispatch();
      if (storeHasMore || due.length < PAGE) return;
      after = due.at(-1);
    }
    storeHasMore = !stopped;
  }

  function scan(): void {
    if (stopped) return;
    if (scanning) {
      again = true;
      return;
    }
    scanning = scanStore()
      .catch((error: unknown) => deps.log.log('warn', 'webhook delivery scan failed', { error: errorMessage(error) }))
      .finally(() => {
        scanning = undefined;
        if (again) {
          again = false;
          scan();
        }
      });
  }

  // A full buffer is work enough: the timer looks at the store again once there is room.
  const timer = setInterval(() => {
    if (buffered.size < BUFFER_LIMIT) scan();
  }, options.intervalMs);
  timer.unref();
  scan();
  return {
    /** New deliveries, due now: they go out without a scan of the store. */
    offer(deliveries: readonly WebhookDeliveryRecord[]): void {
      if (stopped) return;
      for (const delivery of deliveries) if (!hold(delivery)) storeHasMore = true;
      dispatch();
    },
    /** Looks through the store at once. */
    notify(): void {
      scan();
    },
    async stop(): Promise<void> {
      stopped = true;
      clearInterval(timer);
      await scanning;
      await Promise.allSettled([...running]);
    },
  };
}

export type DeliveryPump = ReturnType<typeof startDeliveryPump>;
