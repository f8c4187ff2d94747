// Webhook deliveries over the real MetaStore adapter (on an in-memory dynalite), with a scripted
// sender and a clock the test moves: backoff, give-up after the retry period, dropped deliveries of
// deleted endpoints, and a dead receiver that cannot hold up another endpoint's deliveries.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DynamoMetaStore } from '../../../shared/adapters/aws/dynamo-meta-store.js';
import { startEmbeddedDynamo } from '../../../shared/adapters/local/embedded-dynamo.js';
import {
  attemptDelivery,
  type DeliveryDeps,
  MAX_RETRY_DELAY_MS,
  newDeliveryStats,
  retryDelayMs,
  startDeliveryPump,
  webhookSubscriber,
} from '../../../shared/events/deliveries.js';
import { batchEvent } from '../../../shared/events/model.js';
import type { WebhookAnswer, WebhookSender } from '../../../shared/events/webhook-sender.js';
import type { Logger } from '../../../shared/log.js';
import type { Clock } from '../../../shared/ports.js';
import { batchRecord, webhookEndpointRecord } from '../../adapters/meta-store-contract.js';

const HOUR = 3_600_000;

describe('retryDelayMs', () => {
  it('starts within the base, doubles, stays jittered within [½, 1] and is capped', () => {
    const policy = { baseMs: 5_000, forMs: 72 * HOUR };
    expect(retryDelayMs(1, policy, () => 0)).toBe(2_500);
    expect(retryDelayMs(1, policy, () => 1)).toBe(5_000);
    expect(retryDelayMs(3, policy, () => 1)).toBe(20_000);
    expect(retryDelayMs(50, policy, () => 1)).toBe(MAX_RETRY_DELAY_MS);
    for (let i = 0; i < 100; i++) expect(retryDelayMs(2, policy)).toBeGreaterThanOrEqual(5_000);
  });
});

describe('webhook deliveries', () => {
  let dynamo: Awaited<ReturnType<typeof startEmbeddedDynamo>>;
  let meta: DynamoMetaStore;
  let now = 1_000_000;
  const clock: Clock = { now: () => now, sleep: async () => undefined };
  const lines: { level: string; message: string; fields?: Record<string, unknown> }[] = [];
  const log: Logger = { log: (level, message, fields) => lines.push({ level, message, fields }) };

  beforeAll(async () => {
    dynamo = await startEmbeddedDynamo({});
    meta = new DynamoMetaStore({ client: dynamo.client, tableName: dynamo.tableName, now: () => now });
  });
  afterAll(async () => {
    await dynamo.close();
  });

  function deps(sender: WebhookSender, stats = newDeliveryStats()): DeliveryDeps {
    return { meta, clock, log, sender, retry: { baseMs: 5_000, forMs: 72 * HOUR }, claimMs: 15_000, stats, random: () => 1 };
  }

  async function recordFor(endpointTypes: string[], status: 'completed' | 'failed' = 'completed') {
    const endpoint = webhookEndpointRecord({ eventTypes: endpointTypes });
    await meta.createWebhookEndpoint(endpoint);
    const batch = batchRecord({ project: endpoint.project, status });
    const recorded: string[] = [];
    const subscriber = webhookSubscriber({ meta, clock, onDeliveries: (ds) => void recorded.push(...ds.map((d) => d.id)) });
    const event = batchEvent(batch, status, 'finalizing', now);
    await subscriber.handle(event, batch);
    await subscriber.handle(event, batch); // taken twice: still one delivery
    return { endpoint, batch, event, ids: [...new Set(recorded)] };
  }

  it('records one delivery per subscribed endpoint, and none for other types', async () => {
    const { ids } = await recordFor(['batch.completed']);
    expect(ids).toHaveLength(1);
    expect((await recordFor(['batch.failed'])).ids).toEqual([]);
    await meta.finishWebhookDelivery(ids[0]!);
  });

  it('retries with backoff until the retry period ends, then gives up, logged and counted', async () => {
    const { ids } = await recordFor(['batch.completed']);
    const id = ids[0]!;
    const sent: number[] = [];
    const sender: WebhookSender = { send: async (_u, _s, _m, at) => (sent.push(at), { ok: false, status: 500, error: 'HTTP 500' }) };
    const stats = newDeliveryStats();
    const first = await attemptDelivery(deps(sender, stats), id);
    expect(first).toEqual({ outcome: 'retry', nextAttemptAtMs: now + 5_000 });
    // Not due yet: nothing is sent.
    expect(await attemptDelivery(deps(sender, stats), id)).toEqual({ outcome: 'not_due', nextAttemptAtMs: now + 5_000 });
    expect(sent).toHaveLength(1);
    let outcome = first;
    for (let i = 0; i < 200 && outcome.outcome === 'retry'; i++) {
      now = outcome.nextAttemptAtMs;
      outcome = await attemptDelivery(deps(sender, stats), id);
    }
    expect(outcome).toEqual({ outcome: 'given_up' });
    expect(sent.at(-1)! - sent[0]!).toBeLessThanOrEqual(72 * HOUR);
    expect(sent.at(-1)! - sent[0]!).toBeGreaterThan(69 * HOUR);
    expect(stats.givenUp).toBe(1);
    expect(stats.retried).toBe(sent.length - 1);
    expect(lines.find((l) => l.message === 'webhook delivery given up')?.fields).toMatchObject({ deliveryId: id, error: 'HTTP 500' });
    expect(await meta.getWebhookDelivery(id)).toBeUndefined();
  });

  it("drops a deleted endpoint's deliveries without sending", async () => {
    const { ids, endpoint } = await recordFor(['batch.completed']);
    await meta.deleteWebhookEndpoint(endpoint.project, endpoint.id);
    let calls = 0;
    const sender: WebhookSender = { send: async () => (calls++, { ok: true, status: 200 }) };
    expect(await attemptDelivery(deps(sender), ids[0]!)).toEqual({ outcome: 'dropped' });
    expect(calls).toBe(0);
  });

  it("does not let a receiver that never answers hold up another endpoint's deliveries", async () => {
    // The stuck endpoint's 31 deliveries are due first (recorded 10 s earlier).
    now -= 10_000;
    const stuck = await recordFor(['batch.completed']);
    for (let i = 0; i < 30; i++) {
      const batch = batchRecord({ project: stuck.endpoint.project, status: 'completed' });
      await webhookSubscriber({ meta, clock }).handle(batchEvent(batch, 'completed', 'finalizing', now), batch);
    }
    await meta.updateWebhookEndpoint(stuck.endpoint.project, stuck.endpoint.id, { url: 'https://stuck.example.com/' });
    now += 10_000;
    const healthy = await recordFor(['batch.completed']);
    const delivered: string[] = [];
    let hanging = 0;
    const sender: WebhookSender = {
      send: async (url, _s, message) => {
        if (url === 'https://stuck.example.com/') {
          hanging++;
          return new Promise<WebhookAnswer>(() => undefined);
        }
        delivered.push(message.id);
        return { ok: true, status: 200 };
      },
    };
    const pump = startDeliveryPump(deps(sender), { meta, intervalMs: 50, concurrency: 8, perEndpoint: 2 });
    const deadline = Date.now() + 5_000;
    while (delivered.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(delivered).toEqual([healthy.event.id]);
    // The stuck receiver holds no more than its share (its second attempt may still be claiming).
    while (hanging < 2 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(hanging).toBe(2);
    void pump.stop();
  });
  it("sends one endpoint's backlog reading the store about once per page, not once per attempt", async () => {
    const endpoint = webhookEndpointRecord({ eventTypes: ['batch.completed'] });
    await meta.createWebhookEndpoint(endpoint);
    const events = new Set<string>();
    for (let i = 0; i < 250; i++) {
      const batch = batchRecord({ project: endpoint.project, status: 'completed' });
      const event = batchEvent(batch, 'completed', 'finalizing', now);
      events.add(event.id);
      await webhookSubscriber({ meta, clock }).handle(event, batch);
    }
    let reads = 0;
    const counted = {
      listDueWebhookDeliveries: (...args: Parameters<DynamoMetaStore['listDueWebhookDeliveries']>) => (
        reads++, meta.listDueWebhookDeliveries(...args)
      ),
    };
    const delivered = new Set<string>();
    const sender: WebhookSender = { send: async (_u, _s, message) => (delivered.add(message.id), { ok: true, status: 200 }) };
    // The timer never fires within the test: every read is the pump's own.
    const pump = startDeliveryPump(deps(sender), { meta: counted, intervalMs: 600_000, concurrency: 8, perEndpoint: 2 });
    const deadline = Date.now() + 20_000;
    const ours = () => [...delivered].filter((id) => events.has(id)).length;
    while (ours() < 250 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    await pump.stop();
    // (Deliveries earlier tests left due go out too, within the same pages.)
    expect(ours()).toBe(250);
    expect(reads).toBeLessThanOrEqual(4);
  });

  it('sends the deliveries it is offered without reading the store', async () => {
    let reads = 0;
    const counted = {
      listDueWebhookDeliveries: (...args: Parameters<DynamoMetaStore['listDueWebhookDeliveries']>) => (
        reads++, meta.listDueWebhookDeliveries(...args)
      ),
    };
    const delivered: string[] = [];
    const sender: WebhookSender = { send: async (_u, _s, message) => (delivered.push(message.id), { ok: true, status: 200 }) };
    const pump = startDeliveryPump(deps(sender), { meta: counted, intervalMs: 600_000, concurrency: 8, perEndpoint: 2 });
    while (reads === 0) await new Promise((resolve) => setTimeout(resolve, 10));
    await new Promise((resolve) => setTimeout(resolve, 50));
    const readsAtStart = reads;
    const endpoint = webhookEndpointRecord({ eventTypes: ['batch.completed'] });
    await meta.createWebhookEndpoint(endpoint);
    const batch = batchRecord({ project: endpoint.project, status: 'completed' });
    const event = batchEvent(batch, 'completed', 'finalizing', now);
    await webhookSubscriber({ meta, clock, onDeliveries: (recorded) => pump.offer(recorded) }).handle(event, batch);
    const deadline = Date.now() + 5_000;
    while (!delivered.includes(event.id) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    await pump.stop();
    expect(delivered).toContain(event.id);
    expect(reads).toBe(readsAtStart);
  });
});
