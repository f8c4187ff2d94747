// Sends one signed webhook request: the Standard Webhooks way (the `standardwebhooks` library),
// which is what `client.webhooks.unwrap(body, headers, secret)` of the openai SDK verifies:
//   webhook-id         the event's id (the same on every attempt: receivers tell repeats apart by it)
//   webhook-timestamp  seconds since the epoch, of this attempt
//   webhook-signature  `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, one per signing secret,
//                      space-separated (two for the 24 hours after a rotation that keeps the old one)
// The connection goes only to an address the URL policy allows (checked at connect time), no
// redirect is followed, and the answer's body is never read beyond a few bytes nor kept.
import { Webhook } from 'standardwebhooks';
import { Agent, request } from 'undici';
import { errorMessage } from '../log.js';
import { guardedLookup, type UrlPolicy } from './url-guard.js';

export interface WebhookMessage {
  /** webhook-id */
  id: string;
  /** The JSON body. */
  payload: string;
}

export interface WebhookAnswer {
  /** The receiver answered 2xx. */
  ok: boolean;
  /** The receiver's status code, when it answered at all. */
  status?: number;
  /** Why the attempt failed, for logs: "HTTP 503", "timeout", a connection error's code. */
  error?: string;
}

export interface WebhookSender {
  send(url: string, secrets: readonly string[], message: WebhookMessage, nowMs: number): Promise<WebhookAnswer>;
}

export function signedHeaders(secrets: readonly string[], message: WebhookMessage, nowMs: number): Record<string, string> {
  const at = new Date(Math.floor(nowMs / 1000) * 1000);
  return {
    'webhook-id': message.id,
    'webhook-timestamp': String(Math.floor(nowMs / 1000)),
    'webhook-signature': secrets.map((secret) => new Webhook(secret).sign(message.id, at, message.payload)).join(' '),
  };
}

export function httpWebhookSender(options: { timeoutMs: number; policy: UrlPolicy }): WebhookSender {
  const agent = new Agent({
    connect: { lookup: guardedLookup(options.policy), timeout: options.timeoutMs },
    headersTimeout: options.timeoutMs,
    bodyTimeout: options.timeoutMs,
    // Receivers are many and seldom called: no connection is kept for long.
    keepAliveTimeout: 4_000,
    connections: 8,
  });
  return {
    async send(url, secrets, message, nowMs) {
      try {
        const answer = await request(url, {
          method: 'POST',
          dispatcher: agent,
          headers: {
            'content-type': 'application/json',
            'user-agent': 'batch-service-webhooks/1',
            ...signedHeaders(secrets, message, nowMs),
          },
          body: message.payload,
          signal: AbortSignal.timeout(options.timeoutMs),
        });
        // The body is not ours to read: drop it (up to a few KB, then the connection closes).
        await answer.body.dump({ limit: 4096 }).catch(() => undefined);
        const ok = answer.statusCode >= 200 && answer.statusCode < 300;
        return ok ? { ok, status: answer.statusCode } : { ok, status: answer.statusCode, error: `HTTP ${answer.statusCode}` };
      } catch (error) {
        const code = (error as { code?: string }).code;
        const name = (error as Error).name;
        const reason =
          name === 'TimeoutError' || name === 'AbortError' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT'
            ? 'timeout'
            : name === 'BlockedAddressError' || (error as { cause?: Error }).cause?.name === 'BlockedAddressError'
              ? 'the receiver address is not public'
              : (code ?? errorMessage(error));
        return { ok: false, error: reason };
      }
    },
  };
}
