// Webhook endpoints (OpenAI's webhook endpoints API) and their deliveries.
//
// An endpoint belongs to a project and names the event types it wants. Its signing secret
// (`whsec_` and base64 of 32 random bytes, Standard Webhooks' format) is stored so that every
// delivery can be signed; the API shows it only on create and rotate. After a rotation that keeps
// the old secret for 24 hours, deliveries carry a signature by each secret.
//
// A delivery is one event for one endpoint: a durable record in the MetaStore (the delivery
// outbox) from the moment the event is taken until a receiver answered 2xx or the retries ran out.
import { randomBytes } from 'node:crypto';
import { derivedId } from '../ids.js';
import { BATCH_EVENT_TYPES, type BatchEvent } from './model.js';

export interface WebhookEndpointRecord {
  /** `whe_` and 24 letters or digits. */
  id: string;
  project: string;
  name: string;
  url: string;
  eventTypes: string[];
  secret: string;
  /** The secret before the last rotation, still signing until `previousSecretExpiresAtMs`. */
  previousSecret: string | null;
  previousSecretExpiresAtMs: number | null;
  createdAtMs: number;
  updatedAtMs: number;
}

export interface WebhookDeliveryRecord {
  /** The same for the same event and endpoint, so an event taken twice is delivered once. */
  id: string;
  project: string;
  endpointId: string;
  eventId: string;
  eventType: string;
  /** The JSON body, fixed when the delivery is recorded: every attempt sends the same bytes. */
  payload: string;
  /** Attempts made so far. */
  attempts: number;
  /** When the next attempt is due (or, while an attempt runs, when its claim lapses). */
  nextAttemptAtMs: number;
  createdAtMs: number;
  /** What went wrong last, for logs (a status code or a connection error; never a body). */
  lastError: string | null;
}

/** What `GET /webhook_event_types` lists: OpenAI's four batch events first, then ours. */
export const WEBHOOK_EVENT_TYPES: readonly string[] = [
  'batch.completed',
  'batch.failed',
  'batch.expired',
  'batch.cancelled',
  ...BATCH_EVENT_TYPES.filter((type) => !['batch.completed', 'batch.failed', 'batch.expired', 'batch.cancelled'].includes(type)),
];

export const newSigningSecret = () => `whsec_${randomBytes(32).toString('base64')}`;

/** What the API shows instead of the secret: its prefix and last four characters. */
export const secretHint = (secret: string) => `whsec_****${secret.slice(-4)}`;

export function deliveryId(eventId: string, endpointId: string): string {
  return derivedId('whd_', `delivery:${eventId}:${endpointId}`);
}

/** OpenAI's event object: `{id, object: "event", type, created_at, data: {id}}`. */
export function webhookEventPayload(event: Pick<BatchEvent, 'id' | 'atMs' | 'batchId'> & { type: string }): string {
  return JSON.stringify({
    id: event.id,
    object: 'event',
    type: event.type,
    created_at: Math.floor(event.atMs / 1000),
    data: { id: event.batchId },
  });
}

/** The secrets that sign a delivery made at `nowMs`: the current one, and the previous while it is kept. */
export function signingSecrets(endpoint: WebhookEndpointRecord, nowMs: number): string[] {
  const keepOld = endpoint.previousSecret !== null && (endpoint.previousSecretExpiresAtMs ?? 0) > nowMs;
  return keepOld ? [endpoint.secret, endpoint.previousSecret!] : [endpoint.secret];
}
