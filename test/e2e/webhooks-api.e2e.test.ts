// The webhook endpoints API with the official openai SDK v7 (client.webhooks.*): per project, the
// secret shown only on create and rotate, cursor paging, URLs checked, and the test delivery signed
// so that client.webhooks.unwrap verifies it.
import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client } from '../support/e2e.js';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';
import { startWebhookReceiver, type WebhookReceiver } from '../support/webhook-receiver.js';

// A public address written as a literal: no DNS is needed to check it.
const PUBLIC_URL = 'https://93.184.215.14/hooks';

describe('webhook endpoints API (private URLs refused, the default)', () => {
  let service: ServiceProcess;
  let alice: OpenAI;
  let bob: OpenAI;

  beforeAll(async () => {
    service = await startServiceProcess({ env: { API_KEYS: 'alice-key:alice,bob-key:bob', WEBHOOK_MAX_ENDPOINTS: '8' } });
    alice = client(service.baseURL, 'alice-key');
    bob = client(service.baseURL, 'bob-key');
  });
  afterAll(async () => {
    await service?.removeDataDir();
  });

  it('creates, retrieves, updates, lists and deletes an endpoint; the secret only on create', async () => {
    const created = await alice.webhooks.create({ name: 'ops', url: PUBLIC_URL, event_types: ['batch.completed', 'batch.failed'] });
    expect(created).toMatchObject({
      object: 'webhook_endpoint',
      name: 'ops',
      url: PUBLIC_URL,
      event_types: ['batch.completed', 'batch.failed'],
    });
    expect(created.id).toMatch(/^whe_/);
    expect(created.signing_secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(created.signing_secret_hint).toBe(`whsec_****${created.signing_secret.slice(-4)}`);

    const retrieved = await alice.webhooks.retrieve(created.id);
    expect(retrieved).not.toHaveProperty('signing_secret');
    expect(JSON.stringify(retrieved)).not.toContain(created.signing_secret);
    expect(retrieved).toEqual({
      id: created.id,
      object: 'webhook_endpoint',
      created_at: created.created_at,
      updated_at: created.updated_at,
      name: 'ops',
      url: PUBLIC_URL,
      event_types: ['batch.completed', 'batch.failed'],
      signing_secret_hint: created.signing_secret_hint,
    });

    // An unchanged update changes nothing.
    expect(await alice.webhooks.update(created.id, { name: 'ops' })).toEqual(retrieved);
    const updated = await alice.webhooks.update(created.id, { name: 'ops-2', event_types: ['batch.expired'] });
    expect(updated).toMatchObject({ id: created.id, name: 'ops-2', event_types: ['batch.expired'], url: PUBLIC_URL });
    expect(updated).not.toHaveProperty('signing_secret');

    const deleted = await alice.webhooks.delete(created.id);
    expect(deleted).toEqual({ id: created.id, object: 'webhook_endpoint.deleted', deleted: true });
    await expect(alice.webhooks.retrieve(created.id)).rejects.toMatchObject({ status: 404 });
    await expect(alice.webhooks.delete(created.id)).rejects.toMatchObject({ status: 404 });
  });

  it('lists newest first with cursor paging, and the SDK pages through them all', async () => {
    const project = client(service.baseURL, 'alice-key');
    const made: string[] = [];
    for (let i = 0; i < 5; i++) {
      made.push((await project.webhooks.create({ name: `e${i}`, url: PUBLIC_URL, event_types: ['batch.completed'] })).id);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const first = await project.webhooks.list({ limit: 2 });
    expect(first.data.map((e) => e.id)).toEqual([made[4], made[3]]);
    expect(first.has_more).toBe(true);
    const all: string[] = [];
    for await (const endpoint of project.webhooks.list({ limit: 2 })) all.push(endpoint.id);
    expect(all).toEqual([...made].reverse());
    expect(JSON.stringify(first)).not.toContain('signing_secret"');
  });

  it("answers another project's endpoint 404 for every operation, and never lists it", async () => {
    const mine = await alice.webhooks.create({ name: 'mine', url: PUBLIC_URL, event_types: ['batch.completed'] });
    for (const call of [
      () => bob.webhooks.retrieve(mine.id),
      () => bob.webhooks.update(mine.id, { name: 'stolen' }),
      () => bob.webhooks.rotateSecret(mine.id),
      () => bob.webhooks.test(mine.id, { event_type: 'batch.completed' }),
      () => bob.webhooks.delete(mine.id),
    ]) {
      await expect(call()).rejects.toMatchObject({ status: 404, code: 'not_found' });
    }
    expect((await bob.webhooks.list()).data).toEqual([]);
    expect((await bob.webhooks.list({ after: mine.id })).data).toEqual([]);
    expect((await alice.webhooks.retrieve(mine.id)).name).toBe('mine');
    await expect(alice.webhooks.retrieve('whe_nope')).rejects.toMatchObject({ status: 404 });
  });

  it('refuses http://, loopback, private, link-local and metadata URLs, changing nothing', async () => {
    for (const url of [
      'http://93.184.215.14/hooks',
      'https://127.0.0.1/hooks',
      'https://localhost:8443/hooks',
      'https://10.1.2.3/hooks',
      'https://192.168.1.1/hooks',
      'https://169.254.169.254/latest/meta-data/',
      'https://[::1]/hooks',
      'https://[fd00:ec2::254]/hooks',
      'https://[::ffff:127.0.0.1]/hooks',
      'https://0.0.0.0/hooks',
      'https://user:pass@93.184.215.14/hooks',
      'ftp://93.184.215.14/hooks',
      'not a url',
    ]) {
      await expect(bob.webhooks.create({ name: 'x', url, event_types: ['batch.completed'] }), url).rejects.toMatchObject({
        status: 400,
        param: 'url',
      });
    }
    const ok = await bob.webhooks.create({ name: 'x', url: PUBLIC_URL, event_types: ['batch.completed'] });
    await expect(bob.webhooks.update(ok.id, { url: 'https://169.254.169.254/' })).rejects.toMatchObject({ status: 400, param: 'url' });
    expect((await bob.webhooks.retrieve(ok.id)).url).toBe(PUBLIC_URL);
    expect((await bob.webhooks.list()).data).toHaveLength(1);
    await bob.webhooks.delete(ok.id);
  });

  it('refuses bad bodies with the error envelope, never a 500', async () => {
    const bad = [
      { name: 'x', url: PUBLIC_URL, event_types: [] },
      { name: 'x', url: PUBLIC_URL, event_types: ['no.such.event'] },
      { name: 'x', url: PUBLIC_URL, event_types: 'batch.completed' },
      { name: '', url: PUBLIC_URL, event_types: ['batch.completed'] },
      { url: PUBLIC_URL, event_types: ['batch.completed'] },
      { name: 'x', event_types: ['batch.completed'] },
    ];
    for (const body of bad) {
      await expect(alice.webhooks.create(body as never), JSON.stringify(body)).rejects.toMatchObject({ status: 400 });
    }
    const raw = await fetch(`${service.baseURL}/webhook_endpoints`, {
      method: 'POST',
      headers: { authorization: 'Bearer alice-key', 'content-type': 'application/json' },
      body: '{not json',
    });
    expect(raw.status).toBe(400);
    expect(await raw.json()).toMatchObject({ error: { code: 'invalid_json', type: 'invalid_request_error' } });
  });

  it('caps the endpoints of a project', async () => {
    const carol = client(service.baseURL, 'bob-key');
    const ids: string[] = [];
    for (let i = 0; i < 8; i++)
      ids.push((await carol.webhooks.create({ name: `n${i}`, url: PUBLIC_URL, event_types: ['batch.failed'] })).id);
    await expect(carol.webhooks.create({ name: 'one too many', url: PUBLIC_URL, event_types: ['batch.failed'] })).rejects.toMatchObject({
      status: 400,
      code: 'too_many_webhook_endpoints',
    });
    for (const id of ids) await carol.webhooks.delete(id);
  });

  it('lists the event types, OpenAI’s four batch events first', async () => {
    const types = await alice.webhooks.eventTypes.list();
    expect(types.object).toBe('list');
    expect(types.data.slice(0, 4)).toEqual(['batch.completed', 'batch.failed', 'batch.expired', 'batch.cancelled']);
    expect(types.data).toEqual(expect.arrayContaining(['batch.in_progress', 'batch.cancelling']));
  });
});

describe('webhook endpoints API with WEBHOOK_ALLOW_PRIVATE_URLS=true', () => {
  let service: ServiceProcess;
  let receiver: WebhookReceiver;
  let openai: OpenAI;

  beforeAll(async () => {
    receiver = await startWebhookReceiver();
    service = await startServiceProcess({ env: { API_KEYS: 'k:team', WEBHOOK_ALLOW_PRIVATE_URLS: 'true' } });
    openai = client(service.baseURL, 'k');
  });
  afterAll(async () => {
    await service?.removeDataDir();
    await receiver?.close();
  });

  it('sends a signed sample event with test(), which unwrap verifies with the secret', async () => {
    const endpoint = await openai.webhooks.create({ name: 'local', url: receiver.url, event_types: ['batch.completed'] });
    const result = await openai.webhooks.test(endpoint.id, { event_type: 'batch.completed' });
    expect(result).toEqual({
      object: 'webhook_endpoint.test',
      webhook_endpoint_id: endpoint.id,
      event_type: 'batch.completed',
      status_code: 200,
      success: true,
    });
    const [request] = receiver.received;
    const event = await openai.webhooks.unwrap(request!.body, request!.headers as Record<string, string>, endpoint.signing_secret);
    expect(event).toMatchObject({ object: 'event', type: 'batch.completed', data: { id: expect.stringMatching(/^batch_/) } });
    expect(request!.headers['webhook-id']).toBe(event.id);

    receiver.answer(503);
    expect((await openai.webhooks.test(endpoint.id, { event_type: 'batch.failed' })).status_code).toBe(503);
    receiver.answer(200);
    expect(service.logs()).not.toContain(endpoint.signing_secret);
  });

  it('rotates the secret: with the old one kept 24 h both verify, without it only the new one', async () => {
    const endpoint = await openai.webhooks.create({ name: 'rotating', url: receiver.url, event_types: ['batch.completed'] });
    const kept = await openai.webhooks.rotateSecret(endpoint.id, { keep_old_secret_active_for_24_hours: true });
    expect(kept.signing_secret).not.toBe(endpoint.signing_secret);
    expect(kept.signing_secret_hint).toBe(`whsec_****${kept.signing_secret.slice(-4)}`);
    expect(kept.updated_at).toBeGreaterThanOrEqual(endpoint.updated_at!);
    await openai.webhooks.test(endpoint.id, { event_type: 'batch.completed' });
    const both = receiver.received.at(-1)!;
    await openai.webhooks.unwrap(both.body, both.headers as Record<string, string>, kept.signing_secret);
    await openai.webhooks.unwrap(both.body, both.headers as Record<string, string>, endpoint.signing_secret);

    const fresh = await openai.webhooks.rotateSecret(endpoint.id);
    await openai.webhooks.test(endpoint.id, { event_type: 'batch.completed' });
    const only = receiver.received.at(-1)!;
    await openai.webhooks.unwrap(only.body, only.headers as Record<string, string>, fresh.signing_secret);
    await expect(openai.webhooks.unwrap(only.body, only.headers as Record<string, string>, kept.signing_secret)).rejects.toThrow();
    await expect(openai.webhooks.unwrap(only.body, only.headers as Record<string, string>, endpoint.signing_secret)).rejects.toThrow();
  });

  it('answers a test to a receiver that is not listening with a clear 400', async () => {
    const endpoint = await openai.webhooks.create({ name: 'gone', url: 'http://127.0.0.1:9/hooks', event_types: ['batch.completed'] });
    await expect(openai.webhooks.test(endpoint.id, { event_type: 'batch.completed' })).rejects.toMatchObject({
      status: 400,
      code: 'webhook_endpoint_unreachable',
    });
  });
});
