// An OpenAI-compatible upstream over HTTP, one per route: the route's limits (adaptive
// concurrency up to maxConcurrency, requests and tokens per minute) are shared by every batch on
// it. A timeout per attempt, and retries with exponential backoff and full jitter for what is worth
// retrying (429, 408, 5xx, timeouts and broken connections), honouring retry-after-ms and
// Retry-After, until the attempt limit, or until the next try would land past the window's
// deadline. Any other 4xx is final at once. A request slot is held only while an attempt is on
// the wire (or waits for rate-limit tokens), never while waiting to retry, so a misbehaving
// request does not starve the others.
//
// Answers are read as a stream within a byte limit: a final answer (2xx, or a 4xx that is not
// retried) up to maxResponseBytes, counted against the request's lease on the in-flight budget
// (response-budget.ts); past the limit the read stops and the request's result is the error
// `response_too_large`. An answer that will be retried is read only up to RETRIED_ANSWER_BYTES:
// it is kept only to describe the last try. Every configured key is redacted from the text before
// it is parsed.
import { Pool } from 'undici';
import { randomToken } from '../ids.js';
import type { Logger } from '../log.js';
import type { Clock } from '../ports.js';
import { AdaptiveConcurrency, type Permit, type SampleOutcome } from './adaptive-concurrency.js';
import { estimateTokens, RateLimiter } from './rate-limit.js';
import { noRedaction, type Redactor } from './redact.js';
import type { ResponseLease } from './response-budget.js';
import type { RouteStatus, SendOptions, Upstream, UpstreamRequest, UpstreamResult } from './types.js';

/** Default MAX_RESPONSE_BYTES: 2,048 embeddings of 3,072 dimensions as pretty-printed floats (~24 bytes each) are ~151 MB. */
export const DEFAULT_MAX_RESPONSE_BYTES = 192 * 1024 * 1024;
/** How much of an answer that will be retried (429, 5xx, ...) is read: enough for any error envelope. */
export const RETRIED_ANSWER_BYTES = 64 * 1024;

export interface HttpUpstreamOptions {
  /** Base URL in the OpenAI SDK's sense, usually ending in /v1. */
  baseUrl: string;
  apiKey: string | undefined;
  /** Most requests in flight (the route's maxConcurrency); the adaptive limit stays at or under it. */
  concurrency: number;
  timeoutMs: number;
  maxAttempts: number;
  clock: Clock;
  /** Backoff before the second attempt; doubles each time, up to maxBackoffMs. */
  baseBackoffMs?: number;
  maxBackoffMs?: number;
  requestsPerMinute?: number;
  tokensPerMinute?: number;
  /** Adapt the concurrency limit to 429s and latency (default true); false keeps it at `concurrency`. */
  adaptive?: boolean;
  /** The route's name in logs (its model pattern, or `default`). */
  name?: string;
  log?: Logger;
  /** Sends through this fetch instead of undici's request (tests script answers with it). */
  fetch?: typeof fetch;
  /** The most bytes of one answer that are read (MAX_RESPONSE_BYTES); default DEFAULT_MAX_RESPONSE_BYTES. */
  maxResponseBytes?: number;
  /** Removes every configured upstream key from answer text (all routes' keys, not only this one's). */
  redactor?: Redactor;
}

/** One HTTP answer, its body read within its limit. */
interface Answer {
  status: number;
  header(name: string): string | undefined;
  /** The body as text: whole, or its first bytes when `cut` (an answer to be retried). */
  text: string;
  /** The body went past its limit and was not read to the end. */
  cut: boolean;
  /** Bytes of the body read (or announced by Content-Length when that alone was over the limit). */
  bytes: number;
}

/** Reads the body of an answer with this status: the transport hands it the body stream. */
type BodyReader = (status: number, header: Answer['header'], body: AsyncIterable<Uint8Array>) => Promise<Omit<Answer, 'status' | 'header'>>;

/** Posts a JSON payload; throws UpstreamTimeout when no answer came within the timeout. `signal` aborts it. */
type Transport = (url: string, payload: string, read: BodyReader, signal: AbortSignal | undefined) => Promise<Answer>;

class UpstreamTimeout extends Error {
  override name = 'UpstreamTimeout';
}

/**
 * undici's request: the same HTTP client as Node's fetch, without the WHATWG layers (streams,
 * Headers, an AbortSignal per request) that cost a third of the service's CPU at 1,000 requests a
 * second (measured with --cpu-prof). The timeout is headersTimeout plus bodyTimeout: no answer
 * within it, or an answer that stalls for as long.
 */
function undiciTransport(baseUrl: string, headers: Record<string, string>, timeoutMs: number): Transport {
  // One connection pool per route (an upstream is one origin): no per-request URL parsing or
  // origin lookup. Connections are not capped here: the route's slots cap requests in flight.
  const { origin } = new URL(baseUrl);
  const pool = new Pool(origin, { keepAliveTimeout: 30_000, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
  return async (url, payload, read, signal) => {
    try {
      const response = await pool.request({ method: 'POST', path: url.slice(origin.length), headers, body: payload, signal });
      const header = (name: string) => {
        const value = response.headers[name];
        return Array.isArray(value) ? value[0] : value;
      };
      // A read that stops early destroys the body: undici closes that connection, never reuses it.
      const body = await read(response.statusCode, header, response.body);
      return { status: response.statusCode, header, ...body };
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') throw new UpstreamTimeout();
      throw error;
    }
  };
}

function fetchTransport(fetchFn: typeof fetch, headers: Record<string, string>, timeoutMs: number): Transport {
  return async (url, payload, read, signal) => {
    const timeout = AbortSignal.timeout(timeoutMs);
    try {
      const response = await fetchFn(url, {
        method: 'POST',
        headers,
        body: payload,
        signal: signal ? AbortSignal.any([timeout, signal]) : timeout,
      });
      const header = (name: string) => response.headers.get(name) ?? undefined;
      const body = await read(response.status, header, response.body ?? emptyBody());
      return { status: response.status, header, ...body };
    } catch (error) {
      throw timeout.aborted ? new UpstreamTimeout() : error;
    }
  };
}

interface AttemptOutcome {
  result: UpstreamResult;
  retryable: boolean;
  retryAfterMs?: number;
  /** Tokens the upstream reports it used, when the answer says. */
  usedTokens?: number;
}

const RETRYABLE_STATUS = (status: number) => status === 408 || status === 409 || status === 429 || status >= 500;
/** Answers that mean "you are sending too much": the adaptive limit backs off on a run of them. */
const OVERLOAD_STATUS = (status: number) => status === 429 || status === 503;

export class HttpUpstream implements Upstream {
  private readonly slots: AdaptiveConcurrency;
  private readonly rate: RateLimiter | undefined;
  private readonly transport: Transport;

  constructor(private readonly options: HttpUpstreamOptions) {
    const adaptive = options.adaptive ?? true;
    this.slots = new AdaptiveConcurrency({
      max: options.concurrency,
      ...(adaptive ? {} : { min: options.concurrency }),
      clock: options.clock,
      onChange: (change) =>
        options.log?.log(change.reason === 'growth' ? 'debug' : 'info', 'upstream concurrency limit changed', {
          route: options.name ?? 'default',
          ...change,
        }),
    });
    const rate = new RateLimiter({ requestsPerMinute: options.requestsPerMinute, tokensPerMinute: options.tokensPerMinute }, options.clock);
    this.rate = rate.unlimited ? undefined : rate;
    const headers = {
      'content-type': 'application/json',
      accept: 'application/json',
      ...(options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {}),
    };
    this.transport = options.fetch
      ? fetchTransport(options.fetch, headers, options.timeoutMs)
      : undiciTransport(options.baseUrl, headers, options.timeoutMs);
  }

  /** Requests on the wire (or waiting for rate-limit tokens with a slot) now. */
  get inFlight(): number {
    return this.slots.inFlight;
  }

  /** Requests allowed in flight now: adaptive, never above the route's maxConcurrency. */
  get concurrencyLimit(): number {
    return this.slots.limit;
  }

  status(): RouteStatus {
    return {
      route: this.options.name ?? 'default',
      concurrencyLimit: this.slots.limit,
      maxConcurrency: this.options.concurrency,
      inFlight: this.slots.inFlight,
      waiting: this.slots.waiting + (this.rate?.waiting ?? 0),
    };
  }

  async send(request: UpstreamRequest, options: SendOptions): Promise<UpstreamResult | undefined> {
    const { clock, maxAttempts } = this.options;
    const mayStart = () => !options.signal?.aborted && options.mayStart() && clock.now() < options.deadlineMs;
    const url = this.options.baseUrl + request.url.replace(/^\/v1(?=\/)/, '');
    const payload = JSON.stringify(request.body);
    const estimate = this.rate ? estimateTokens(request.body) : 0;
    let last: UpstreamResult | undefined;
    for (let attempt = 1; ; attempt++) {
      const outcome = await this.attemptWithinLimits(url, payload, estimate, mayStart, attempt > 1, options);
      // Stopped before this attempt could start: what came before it is not a final answer.
      if (!outcome) return last && { ...last, unfinished: true };
      // Aborted on the wire before it answered: not a final answer either.
      if (options.signal?.aborted && outcome.result.kind === 'error') return { ...outcome.result, unfinished: true };
      last = outcome.result;
      if (!outcome.retryable || attempt >= maxAttempts) return last;
      const wait = outcome.retryAfterMs ?? this.backoff(attempt);
      // Waiting past the deadline would only lead to an attempt the window no longer allows.
      if (clock.now() + wait >= options.deadlineMs) return { ...last, unfinished: true };
      await clock.sleep(wait);
    }
  }

  private backoff(attempt: number): number {
    const base = this.options.baseBackoffMs ?? 500;
    const cap = this.options.maxBackoffMs ?? 30_000;
    return Math.random() * Math.min(cap, base * 2 ** (attempt - 1));
  }

  /**
   * One attempt inside the route's limits: a slot (retries first in line), then room in the
   * in-flight budget of answer bytes, then rate-limit tokens, then the wire.
   */
  private async attemptWithinLimits(
    url: string,
    payload: string,
    estimate: number,
    mayStart: () => boolean,
    retry: boolean,
    { lease, signal, tenant }: Pick<SendOptions, 'lease' | 'signal' | 'tenant'>,
  ): Promise<AttemptOutcome | undefined> {
    const { clock } = this.options;
    const permit: Permit = await this.slots.acquire(retry, tenant);
    let sample: { latencyMs: number; outcome: SampleOutcome } | undefined;
    try {
      // Answers already held use up the budget: nothing new starts until lines made of them are written.
      await lease?.budget.roomToStart();
      if (this.rate && !(await this.rate.acquire(estimate, mayStart))) return undefined;
      if (!mayStart()) {
        this.rate?.release(estimate);
        return undefined;
      }
      const started = clock.now();
      const outcome = await this.attempt(url, payload, lease, signal);
      const { result } = outcome;
      // An attempt aborted before it answered says nothing about the upstream's load.
      if (signal?.aborted && result.kind === 'error') return outcome;
      sample = {
        latencyMs: clock.now() - started,
        outcome: result.kind === 'error' ? 'error' : OVERLOAD_STATUS(result.statusCode) ? 'overload' : 'ok',
      };
      if (this.rate && outcome.usedTokens !== undefined) this.rate.adjust(outcome.usedTokens - estimate);
      return outcome;
    } finally {
      this.slots.release(permit, sample);
    }
  }

  private async attempt(
    url: string,
    payload: string,
    lease: ResponseLease | undefined,
    signal: AbortSignal | undefined,
  ): Promise<AttemptOutcome> {
    const redact = this.options.redactor ?? noRedaction;
    try {
      const answer = await this.transport(url, payload, (status, header, body) => this.readBody(status, header, body, lease), signal);
      if (answer.cut && !RETRYABLE_STATUS(answer.status)) {
        const limit = this.options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
        return {
          result: {
            kind: 'error',
            code: 'response_too_large',
            message: `The upstream answered HTTP ${answer.status} with more than ${limit} bytes (MAX_RESPONSE_BYTES); the answer was not kept.`,
          },
          retryable: false,
        };
      }
      const body = parseBody(redact.redact(answer.text));
      const requestId = answer.header('x-request-id');
      const result: UpstreamResult = {
        kind: 'response',
        statusCode: answer.status,
        requestId: requestId ? redact.redact(requestId) : `req_${randomToken(20)}`,
        body,
      };
      return {
        result,
        retryable: RETRYABLE_STATUS(answer.status),
        retryAfterMs: retryAfter(answer.header, this.options.clock),
        usedTokens: usedTokens(body),
      };
    } catch (error) {
      return {
        result:
          error instanceof UpstreamTimeout
            ? { kind: 'error', code: 'upstream_timeout', message: `The upstream did not answer within ${this.options.timeoutMs} ms.` }
            : {
                kind: 'error',
                code: 'upstream_unreachable',
                message: `The upstream could not be reached: ${redact.redact(describe(error))}.`,
              },
        retryable: true,
      };
    }
  }

  /**
   * Reads a body within its limit. A final answer's bytes are taken from the lease as they
   * arrive (waiting while the in-flight budget is spent), and stay held after the read: the
   * caller releases them once the result line is written. An answer to be retried is read up to
   * RETRIED_ANSWER_BYTES and holds nothing.
   */
  private async readBody(
    status: number,
    header: Answer['header'],
    body: AsyncIterable<Uint8Array>,
    lease: ResponseLease | undefined,
  ): Promise<Omit<Answer, 'status' | 'header'>> {
    const retried = RETRYABLE_STATUS(status);
    const limit = retried ? RETRIED_ANSWER_BYTES : (this.options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES);
    const charged = retried ? undefined : lease;
    const announced = Number(header('content-length'));
    const pieces: Uint8Array[] = [];
    let bytes = 0;
    let cut = false;
    try {
      if (Number.isFinite(announced) && announced > limit && !retried) {
        cut = true;
        bytes = announced;
      } else {
        for await (const piece of body) {
          const room = limit - bytes;
          if (piece.length > room) {
            if (room > 0) pieces.push(piece.subarray(0, room));
            bytes += piece.length;
            cut = true;
            break;
          }
          await charged?.take(piece.length);
          pieces.push(piece);
          bytes += piece.length;
        }
      }
    } catch (error) {
      // A read that broke off (a reset, the body timeout) holds nothing: the attempt is retried.
      charged?.release();
      throw error;
    } finally {
      charged?.doneReading();
      // Stopping early: the rest of the body is not wanted (the connection is closed, not reused).
      if (cut) await destroyBody(body);
    }
    // An answer over the limit that is not retried keeps nothing at all.
    if (cut && !retried) {
      charged?.release();
      return { text: '', cut, bytes };
    }
    const only = pieces.length === 1 ? pieces[0]! : undefined;
    const whole = only ? Buffer.from(only.buffer, only.byteOffset, only.byteLength) : Buffer.concat(pieces);
    return { text: whole.toString('utf8'), cut, bytes };
  }
}

async function* emptyBody(): AsyncGenerator<Uint8Array> {}

async function destroyBody(body: AsyncIterable<Uint8Array>): Promise<void> {
  const stream = body as { destroy?: () => void; cancel?: () => Promise<void> };
  if (typeof stream.destroy === 'function') stream.destroy();
  else if (typeof stream.cancel === 'function') await stream.cancel().catch(() => undefined);
}

/** total_tokens of the answer's usage (chat, completions, embeddings, responses), if it has one. */
function usedTokens(body: unknown): number | undefined {
  const usage = (body as { usage?: Record<string, unknown> } | null)?.usage;
  if (!usage || typeof usage !== 'object') return undefined;
  const total = usage.total_tokens;
  if (typeof total === 'number' && Number.isFinite(total)) return total;
  const parts = [usage.prompt_tokens ?? usage.input_tokens, usage.completion_tokens ?? usage.output_tokens];
  const sum = parts.reduce<number>((acc, part) => acc + (typeof part === 'number' && Number.isFinite(part) ? part : 0), 0);
  return sum > 0 ? sum : undefined;
}

function parseBody(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return { error: { message: text.slice(0, 2_000), type: 'upstream_error', param: null, code: null } };
  }
}

/** retry-after-ms (OpenAI's), then Retry-After in seconds or as an HTTP date. */
function retryAfter(header: Answer['header'], clock: Clock): number | undefined {
  const msText = header('retry-after-ms');
  const ms = Number(msText);
  if (msText !== undefined && msText !== '' && Number.isFinite(ms) && ms >= 0) return ms;
  const value = header('retry-after');
  if (!value) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1_000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - clock.now());
}

/** The cause of a fetch failure, without anything that could carry a secret (no URLs, no headers). */
function describe(error: unknown): string {
  const { cause, code, name } = (error ?? {}) as { cause?: { code?: string }; code?: string; name?: string };
  return cause?.code ?? code ?? name ?? 'unknown error';
}
