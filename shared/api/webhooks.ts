// OpenAI's webhook endpoints API, per project, as the openai SDK v7 calls it (client.webhooks.*):
//
//   POST   /webhook_endpoints                    {name, url, event_types}  → webhook_endpoint + signing_secret
//   GET    /webhook_endpoints?limit&after                                  → list, newest first
//   GET    /webhook_endpoints/{id}                                         → webhook_endpoint
//   POST   /webhook_endpoints/{id}               {name?, url?, event_types?} → webhook_endpoint
//   DELETE /webhook_endpoints/{id}                                         → webhook_endpoint.deleted
//   POST   /webhook_endpoints/{id}/rotate_secret {keep_old_secret_active_for_24_hours?} → + signing_secret
//   POST   /webhook_endpoints/{id}/test          {event_type}              → webhook_endpoint.test
//   GET    /webhook_event_types                                            → list of event type names
//
// The signing secret is shown only by create and rotate; every other answer has its hint. Another
// project's endpoint answers 404, like a missing one. A URL must be https:// and resolve to public
// addresses only (shared/events/url-guard.ts), unless WEBHOOK_ALLOW_PRIVATE_URLS=true.
import type { Context, Hono } from 'hono';
import { z } from 'zod';
import { type UrlPolicy, webhookUrlProblem } from '../events/url-guard.js';
import {
  newSigningSecret,
  secretHint,
  signingSecrets,
  WEBHOOK_EVENT_TYPES,
  type WebhookEndpointRecord,
  webhookEventPayload,
} from '../events/webhook-model.js';
import type { WebhookSender } from '../events/webhook-sender.js';
import { isIdOf, newWebhookEndpointId, randomToken } from '../ids.js';
import type { Clock, MetaStore } from '../ports.js';
import { ApiError, badRequest, notFound, quoted } from './errors.js';
import { listObject } from './objects.js';
import { DEFAULT_MAX_JSON_BODY_BYTES, jsonBodyLimit, parse } from './request.js';
import { pageLimit } from './schemas.js';

export interface WebhookApiDeps {
  meta: MetaStore;
  clock: Clock;
  limits: { maxJsonBodyBytes?: number };
  webhooks: {
    policy: UrlPolicy;
    /** Sends the sample event of POST /webhook_endpoints/{id}/test. */
    sender: WebhookSender;
    /** The most endpoints one project may have. */
    maxEndpointsPerProject: number;
  };
}

type Env = { Variables: { project: string; requestId: string } };

const KEEP_OLD_SECRET_MS = 24 * 3_600_000;

const eventTypes = z
  .array(
    z.string({ error: 'event types must be strings' }).refine((type) => WEBHOOK_EVENT_TYPES.includes(type), {
      error: (issue) => `'${quoted(String(issue.input))}' is not an event type of this service (GET /v1/webhook_event_types lists them)`,
    }),
    { error: 'event_types must be an array of event type names' },
  )
  .min(1, 'event_types must name at least one event type')
  .max(WEBHOOK_EVENT_TYPES.length, `event_types can name at most ${WEBHOOK_EVENT_TYPES.length} event types`)
  .transform((types) => [...new Set(types)]);

const name = z
  .string({ error: 'name must be a string' })
  .trim()
  .min(1, 'name must not be empty')
  .max(256, 'name must be at most 256 characters');
const url = z.string({ error: 'url must be a string' }).min(1, 'url must not be empty');

const createSchema = z.object({ name, url, event_types: eventTypes }, { error: 'the body must be a JSON object' });
const updateSchema = z.object(
  { name: name.optional(), url: url.optional(), event_types: eventTypes.optional() },
  { error: 'the body must be a JSON object' },
);
const rotateSchema = z.object(
  { keep_old_secret_active_for_24_hours: z.boolean({ error: 'keep_old_secret_active_for_24_hours must be a boolean' }).optional() },
  { error: 'the body must be a JSON object' },
);
const testSchema = z.object(
  {
    event_type: z.string({ error: 'event_type is required and must be a string' }).refine((type) => WEBHOOK_EVENT_TYPES.includes(type), {
      error: (issue) => `'${quoted(String(issue.input))}' is not an event type of this service`,
    }),
  },
  { error: 'the body must be a JSON object' },
);
const listQuery = z.object({
  limit: pageLimit(100, 20),
  after: z.string().min(1).optional(),
});

const seconds = (ms: number) => Math.floor(ms / 1000);

export function toWebhookEndpointObject(endpoint: WebhookEndpointRecord) {
  return {
    id: endpoint.id,
    object: 'webhook_endpoint' as const,
    created_at: seconds(endpoint.createdAtMs),
    updated_at: seconds(endpoint.updatedAtMs),
    name: endpoint.name,
    url: endpoint.url,
    event_types: endpoint.eventTypes,
    signing_secret_hint: secretHint(endpoint.secret),
  };
}

/** Only create and rotate show the secret. */
const withSecret = (endpoint: WebhookEndpointRecord) => ({ ...toWebhookEndpointObject(endpoint), signing_secret: endpoint.secret });

export function registerWebhookRoutes(api: Hono<Env>, deps: WebhookApiDeps): void {
  const { meta, clock } = deps;
  const { policy, sender } = deps.webhooks;
  const jsonLimit = jsonBodyLimit(deps.limits.maxJsonBodyBytes ?? DEFAULT_MAX_JSON_BODY_BYTES);

  api.get('/webhook_event_types', (c) => c.json({ object: 'list' as const, data: [...WEBHOOK_EVENT_TYPES] }));

  api.post('/webhook_endpoints', jsonLimit, async (c) => {
    const project = c.get('project');
    const body = parse(createSchema, await objectBody(c, false));
    await checkUrl(body.url);
    const existing = await meta.listWebhookEndpoints(project, { limit: deps.webhooks.maxEndpointsPerProject });
    if (existing.items.length >= deps.webhooks.maxEndpointsPerProject) {
      throw badRequest(
        `A project can have at most ${deps.webhooks.maxEndpointsPerProject} webhook endpoints; delete one first.`,
        null,
        'too_many_webhook_endpoints',
      );
    }
    const now = clock.now();
    const endpoint: WebhookEndpointRecord = {
      id: newWebhookEndpointId(),
      project,
      name: body.name,
      url: body.url,
      eventTypes: body.event_types,
      secret: newSigningSecret(),
      previousSecret: null,
      previousSecretExpiresAtMs: null,
      createdAtMs: now,
      updatedAtMs: now,
    };
    await meta.createWebhookEndpoint(endpoint);
    return c.json(withSecret(endpoint));
  });

  api.get('/webhook_endpoints', async (c) => {
    const query = parse(listQuery, c.req.query());
    if (query.after !== undefined && !isIdOf('webhook_endpoint', query.after)) return c.json(listObject([], false));
    const page = await meta.listWebhookEndpoints(c.get('project'), query);
    return c.json(listObject(page.items.map(toWebhookEndpointObject), page.hasMore));
  });

  api.get('/webhook_endpoints/:id', async (c) => c.json(toWebhookEndpointObject(await endpointOf(c))));

  api.post('/webhook_endpoints/:id', jsonLimit, async (c) => {
    const current = await endpointOf(c);
    const body = parse(updateSchema, await objectBody(c, true));
    const changes = {
      ...(body.name !== undefined && body.name !== current.name && { name: body.name }),
      ...(body.url !== undefined && body.url !== current.url && { url: body.url }),
      ...(body.event_types !== undefined && !sameTypes(body.event_types, current.eventTypes) && { eventTypes: body.event_types }),
    };
    // An unchanged update does not advance updated_at.
    if (Object.keys(changes).length === 0) return c.json(toWebhookEndpointObject(current));
    if (changes.url !== undefined) await checkUrl(changes.url);
    const updated = await meta.updateWebhookEndpoint(current.project, current.id, { ...changes, updatedAtMs: clock.now() });
    if (!updated) throw notFound('webhook endpoint', current.id);
    return c.json(toWebhookEndpointObject(updated));
  });

  api.delete('/webhook_endpoints/:id', async (c) => {
    const id = endpointId(c);
    const deleted = await meta.deleteWebhookEndpoint(c.get('project'), id);
    if (!deleted) throw notFound('webhook endpoint', id);
    return c.json({ id: deleted.id, object: 'webhook_endpoint.deleted' as const, deleted: true });
  });

  api.post('/webhook_endpoints/:id/rotate_secret', jsonLimit, async (c) => {
    const current = await endpointOf(c);
    const body = parse(rotateSchema, await objectBody(c, true));
    const now = clock.now();
    const keep = body.keep_old_secret_active_for_24_hours ?? false;
    const rotated = await meta.updateWebhookEndpoint(current.project, current.id, {
      secret: newSigningSecret(),
      previousSecret: keep ? current.secret : null,
      previousSecretExpiresAtMs: keep ? now + KEEP_OLD_SECRET_MS : null,
      updatedAtMs: now,
    });
    if (!rotated) throw notFound('webhook endpoint', current.id);
    return c.json(withSecret(rotated));
  });

  api.post('/webhook_endpoints/:id/test', jsonLimit, async (c) => {
    const endpoint = await endpointOf(c);
    const body = parse(testSchema, await objectBody(c, false));
    // The URL is checked again: the policy may have changed since the endpoint was made.
    await checkUrl(endpoint.url);
    const now = clock.now();
    const event = { id: `evt_test_${randomToken(24)}`, type: body.event_type, atMs: now, batchId: `batch_test_${randomToken(24)}` };
    const answer = await sender.send(
      endpoint.url,
      signingSecrets(endpoint, now),
      { id: event.id, payload: webhookEventPayload(event) },
      now,
    );
    if (answer.status === undefined) {
      throw badRequest(`The webhook endpoint did not answer: ${answer.error ?? 'no answer'}.`, 'url', 'webhook_endpoint_unreachable');
    }
    return c.json({
      object: 'webhook_endpoint.test' as const,
      webhook_endpoint_id: endpoint.id,
      event_type: body.event_type,
      status_code: answer.status,
      success: true as const,
    });
  });

  async function checkUrl(value: string): Promise<void> {
    const problem = await webhookUrlProblem(value, policy);
    if (problem) throw badRequest(`The webhook URL is refused: ${problem}.`, 'url', 'invalid_url');
  }

  function endpointId(c: Context<Env>): string {
    const id = c.req.param('id')!;
    if (!isIdOf('webhook_endpoint', id)) throw notFound('webhook endpoint', id);
    return id;
  }

  async function endpointOf(c: Context<Env>): Promise<WebhookEndpointRecord> {
    const id = endpointId(c);
    const endpoint = await meta.getWebhookEndpoint(c.get('project'), id);
    if (!endpoint) throw notFound('webhook endpoint', id);
    return endpoint;
  }
}

/** The JSON body; `emptyIsObject`: a missing body is {} (the SDK sends {} for update and rotate). */
async function objectBody(c: { req: { text(): Promise<string> } }, emptyIsObject: boolean): Promise<unknown> {
  const text = await c.req.text();
  if (!text.trim()) {
    if (emptyIsObject) return {};
    throw badRequest('The request body is empty; send a JSON object.');
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(400, 'The request body is not valid JSON.', 'invalid_request_error', null, 'invalid_json');
  }
}

function sameTypes(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((type) => b.includes(type));
}
