// An OpenAI-compatible upstream over HTTP: bounded requests in flight, a timeout per attempt,
// and retries with exponential backoff and full jitter for what is worth retrying (429, 408, 5xx,
// timeouts and broken connections), honouring retry-after-ms and Retry-After. Any other 4xx is
// final at once. A request slot is held only while an attempt is on the wire, never while
// waiting to retry, so a misbehaving request does not starve the others.
import pLimit, { type LimitFunction } from 'p-limit';
import type { Clock } from '../ports.js';
import { randomToken } from '../ids.js';
import type { SendOptions, Upstream, UpstreamRequest, UpstreamResult } from './types.js';

export interface HttpUpstreamOptions {
  /** Base URL in the OpenAI SDK's sense, usually ending in /v1. */
  baseUrl: string;
  apiKey: string | undefined;
  concurrency: number;
  timeoutMs: number;
  maxAttempts: number;
  clock: Clock;
  /** Backoff before the second attempt; doubles each time, up to maxBackoffMs. */
  baseBackoffMs?: number;
  maxBackoffMs?: number;
  fetch?: typeof fetch;
}

const RETRYABLE_STATUS = (status: number) => status === 408 || status === 409 || status === 429 || status >= 500;

export class HttpUpstream implements Upstream {
  private readonly limit: LimitFunction;
  private readonly fetch: typeof fetch;

  constructor(private readonly options: HttpUpstreamOptions) {
    this.limit = pLimit(options.concurrency);
    this.fetch = options.fetch ?? globalThis.fetch;
  }

  /** Requests on the wire now. */
  get inFlight(): number {
    return this.limit.activeCount;
  }

  async send(request: UpstreamRequest, options: SendOptions): Promise<UpstreamResult | undefined> {
    const { clock, maxAttempts } = this.options;
    const mayStart = () => options.mayStart() && clock.now() < options.deadlineMs;
    let last: UpstreamResult | undefined;
    for (let attempt = 1; ; attempt++) {
      const outcome = await this.limit(() => (mayStart() ? this.attempt(request) : undefined));
      if (!outcome) break;
      last = outcome.result;
      if (!outcome.retryable || attempt >= maxAttempts) break;
      const wait = outcome.retryAfterMs ?? this.backoff(attempt);
      // Waiting past the deadline would only lead to an attempt the window no longer allows.
      if (clock.now() + wait >= options.deadlineMs) break;
      await clock.sleep(wait);
    }
    return last;
  }

  private backoff(attempt: number): number {
    const base = this.options.baseBackoffMs ?? 500;
    const cap = this.options.maxBackoffMs ?? 30_000;
    return Math.random() * Math.min(cap, base * 2 ** (attempt - 1));
  }

  private async attempt(request: UpstreamRequest): Promise<{ result: UpstreamResult; retryable: boolean; retryAfterMs?: number }> {
    const url = this.options.baseUrl + request.url.replace(/^\/v1(?=\/)/, '');
    const timeout = AbortSignal.timeout(this.options.timeoutMs);
    try {
      const response = await this.fetch(url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/json',
          ...(this.options.apiKey ? { authorization: `Bearer ${this.options.apiKey}` } : {}),
        },
        body: JSON.stringify(request.body),
        signal: timeout,
      });
      const text = await response.text();
      const result: UpstreamResult = {
        kind: 'response',
        statusCode: response.status,
        requestId: response.headers.get('x-request-id') ?? `req_${randomToken(20)}`,
        body: parseBody(text),
      };
      return { result, retryable: RETRYABLE_STATUS(response.status), retryAfterMs: retryAfter(response.headers, this.options.clock) };
    } catch (error) {
      return {
        result: timeout.aborted
          ? { kind: 'error', code: 'upstream_timeout', message: `The upstream did not answer within ${this.options.timeoutMs} ms.` }
          : { kind: 'error', code: 'upstream_unreachable', message: `The upstream could not be reached: ${describe(error)}.` },
        retryable: true,
      };
    }
  }
}

function parseBody(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return { error: { message: text.slice(0, 2_000), type: 'upstream_error', param: null, code: null } };
  }
}

/** retry-after-ms (OpenAI's), then Retry-After in seconds or as an HTTP date. */
function retryAfter(headers: Headers, clock: Clock): number | undefined {
  const ms = Number(headers.get('retry-after-ms'));
  if (headers.has('retry-after-ms') && Number.isFinite(ms) && ms >= 0) return ms;
  const value = headers.get('retry-after');
  if (!value) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1_000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - clock.now());
}

/** The cause of a fetch failure, without anything that could carry a secret (no URLs, no headers). */
function describe(error: unknown): string {
  const cause = (error as { cause?: { code?: string } })?.cause;
  return cause?.code ?? (error as Error)?.name ?? 'unknown error';
}
