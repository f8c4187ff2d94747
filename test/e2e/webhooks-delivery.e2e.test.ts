// Webhook deliveries from `npm start`: every way a batch ends is delivered to the project's
// subscribed endpoints, signed so that client.webhooks.unwrap verifies it; a receiver that fails
// gets the retry, even across a restart; rotation signs with the right secrets.
import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLine, chatLines, client, submit, waitForBatch } from '../support/e2e.js';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';
import { type ReceivedWebhook, startWebhookReceiver, type WebhookReceiver } from '../support/webhook-receiver.js';

const FINAL_EVENTS = ['batch.completed', 'batch.failed', 'batch.expired', 'batch.cancelled'] as const;

const forBatch = (batchId: string) => (received: ReceivedWebhook[]) => received.filter((r) => JSON.parse(r.body).data?.id === batchId);

describe('webhook deliveries', () => {
  let upstream: UpstreamSim;
  let receiver: WebhookReceiver;
  let service: ServiceProcess;
  let alice: OpenAI;
  let secret: string;

  beforeAll(async () => {
    upstream = await startUpstreamSim({ latencyMs: 5 });
    receiver = await startWebhookReceiver();
    service = await startServiceProcess({
      env: {
        API_KEYS: 'alice-key:alice,bob-key:bob',
        UPSTREAM_BASE_URL: upstream.baseURL,
        UPSTREAM_CONCURRENCY: '4',
        UPSTREAM_TIMEOUT: '2s',
        MIN_COMPLETION_WINDOW: '3s',
        CHUNK_MAX_REQUESTS: '10',
        WEBHOOK_ALLOW_PRIVATE_URLS: 'true',
        WEBHOOK_RETRY_BASE: '2s',
        WEBHOOK_POLL_INTERVAL: '200ms',
      },
    });
    alice = client(service.baseURL, 'alice-key');
    const endpoint = await alice.webhooks.create({ name: 'alice', url: receiver.url, event_types: [...FINAL_EVENTS] });
    secret = endpoint.signing_secret;
  });
  afterAll(async () => {
    await service?.removeDataDir();
    await receiver?.close();
    await upstream?.close();
  });

  async function deliveredEvent(batchId: string, signingSecret = secret) {
    const [request] = forBatch(batchId)(await receiver.waitFor((r) => forBatch(batchId)(r).length > 0));
    const event = await alice.webhooks.unwrap(request!.body, request!.headers as Record<string, string>, signingSecret);
    return { event, request: request! };
  }

  it('delivers batch.completed, batch.failed, batch.expired and batch.cancelled, each once, verified by unwrap', async () => {
    const completed = await submit(alice, chatLines(5));
    const failed = await submit(alice, [chatLine('a', 'fine'), '{"custom_id": "b", "broken']);
    upstream.configure({ latencyMs: 300 });
    const expired = await submit(alice, chatLines(60, { prefix: 'slow' }), { window: '3s' });
    const cancelled = await submit(alice, chatLines(60, { prefix: 'cancel me' }));
    await waitForBatch(alice, cancelled.id, (b) => b.status === 'in_progress');
    await alice.batches.cancel(cancelled.id);

    const ends = { completed, failed, expired, cancelled };
    for (const [status, created] of Object.entries(ends)) {
      const batch = await waitForBatch(alice, created.id);
      expect(batch.status).toBe(status);
      const { event, request } = await deliveredEvent(created.id);
      expect(event).toEqual({
        id: expect.stringMatching(/^evt_/),
        object: 'event',
        type: `batch.${status}`,
        created_at: expect.any(Number),
        data: { id: created.id },
      });
      expect(event.created_at).toBeGreaterThanOrEqual(batch.created_at);
      expect(request.headers['webhook-id']).toBe(event.id);
      expect(request.headers['content-type']).toBe('application/json');
    }
    upstream.configure({ latencyMs: 5 });
    // Only the subscribed (final) events, each exactly once.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    for (const created of Object.values(ends)) expect(forBatch(created.id)(receiver.received)).toHaveLength(1);
    expect(service.logs()).not.toContain(secret);
  });

  it("never delivers one project's events to another's endpoint", async () => {
    const bob = client(service.baseURL, 'bob-key');
    const batch = await submit(bob, chatLines(2));
    await waitForBatch(bob, batch.id);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(forBatch(batch.id)(receiver.received)).toEqual([]);
  });

  it('retries a receiver that answers 503 first, with the same id and body, within about 10 s', async () => {
    let failedOnce = false;
    receiver.answer((request) => {
      if (!failedOnce && request.body.includes('"batch.completed"')) {
        failedOnce = true;
        return 503;
      }
      return 200;
    });
    const created = await submit(alice, chatLines(3));
    await waitForBatch(alice, created.id);
    const [first, second] = forBatch(created.id)(await receiver.waitFor((r) => forBatch(created.id)(r).length >= 2, 20_000));
    receiver.answer(200);
    expect(second!.headers['webhook-id']).toBe(first!.headers['webhook-id']);
    expect(second!.body).toBe(first!.body);
    expect(second!.atMs - first!.atMs).toBeGreaterThanOrEqual(900);
    expect(second!.atMs - first!.atMs).toBeLessThan(10_000);
    await alice.webhooks.unwrap(second!.body, second!.headers as Record<string, string>, secret);
    expect(service.logs()).toContain('webhook delivery failed; it will be retried');
  });

  it('still delivers when the service restarts between the failure and the retry', async () => {
    receiver.answer(503);
    const retriesLogged = () => service.logs().split('webhook delivery failed; it will be retried').length - 1;
    const logged = retriesLogged();
    const created = await submit(alice, chatLines(3));
    await waitForBatch(alice, created.id);
    await receiver.waitFor((r) => forBatch(created.id)(r).length >= 1);
    // The failure is recorded (the retry is due in 1-2 s): now the process dies.
    const deadline = Date.now() + 10_000;
    while (retriesLogged() === logged && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    await service.kill9();
    receiver.answer(200);
    const before = forBatch(created.id)(receiver.received).length;
    service = await service.restart();
    alice = client(service.baseURL, 'alice-key');
    const all = forBatch(created.id)(await receiver.waitFor((r) => forBatch(created.id)(r).length > before, 20_000));
    const last = all.at(-1)!;
    expect(last.headers['webhook-id']).toBe(all[0]!.headers['webhook-id']);
    const event = await alice.webhooks.unwrap(last.body, last.headers as Record<string, string>, secret);
    expect(event.type).toBe('batch.completed');
    // Delivered by the new process (it logs once the delivery is removed from the outbox).
    const until = Date.now() + 5_000;
    while (!service.logs().includes('webhook delivered') && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(service.logs()).toContain('webhook delivered');
  });

  it('signs deliveries with both secrets for 24 h after a rotation that keeps the old one, and only the new one otherwise', async () => {
    const [endpoint] = (await alice.webhooks.list()).data;
    const kept = await alice.webhooks.rotateSecret(endpoint!.id, { keep_old_secret_active_for_24_hours: true });
    const one = await submit(alice, chatLines(2));
    await waitForBatch(alice, one.id);
    const { request } = await deliveredEvent(one.id, kept.signing_secret);
    await alice.webhooks.unwrap(request.body, request.headers as Record<string, string>, secret);

    const fresh = await alice.webhooks.rotateSecret(endpoint!.id, { keep_old_secret_active_for_24_hours: false });
    const two = await submit(alice, chatLines(2));
    await waitForBatch(alice, two.id);
    const delivered = await deliveredEvent(two.id, fresh.signing_secret);
    const headers = delivered.request.headers as Record<string, string>;
    await expect(alice.webhooks.unwrap(delivered.request.body, headers, kept.signing_secret)).rejects.toThrow();
    await expect(alice.webhooks.unwrap(delivered.request.body, headers, secret)).rejects.toThrow();
    secret = fresh.signing_secret;
  });

  it('stops delivering to an endpoint once it is deleted', async () => {
    const [endpoint] = (await alice.webhooks.list()).data;
    await alice.webhooks.delete(endpoint!.id);
    const created = await submit(alice, chatLines(2));
    await waitForBatch(alice, created.id);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(forBatch(created.id)(receiver.received)).toEqual([]);
  });
});
