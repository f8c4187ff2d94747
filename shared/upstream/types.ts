import type { Tenant } from '../schedule/fair-queue.js';
import type { Redactor } from './redact.js';
import type { ResponseLease } from './response-budget.js';

/** One request line, ready to send: the url is normalised to its /v1 form. */
export interface UpstreamRequest {
  url: string;
  body: Record<string, unknown>;
}

/**
 * What became of one request: an HTTP answer (any status), or a failure with no usable answer.
 * `unfinished`: retrying was cut short (the window was about to close, or the batch stopped)
 * before a final answer came; this is the last answer seen, and the request counts as not run.
 */
export type UpstreamResult = (
  | { kind: 'response'; statusCode: number; requestId: string; body: unknown }
  | { kind: 'error'; code: string; message: string }
) & { unfinished?: boolean };

export interface SendOptions {
  deadlineMs: number;
  mayStart: () => boolean;
  /**
   * The request's share of the in-flight budget of answer bytes: no attempt goes on the wire while
   * the budget is spent, and the final answer's bytes are held on it until the caller releases it
   * (once the result line is written). Without one, answers are only bounded by MAX_RESPONSE_BYTES.
   */
  lease?: ResponseLease;
  /**
   * Aborts the attempt on the wire (the worker's invocation is about to end): the answer is then
   * `unfinished` (or undefined when no attempt had answered before), and no further attempt starts.
   */
  signal?: AbortSignal;
  /** Whose request it is: the route's free slots go to waiting requests in fair turns of projects and batches. */
  tenant?: Tenant;
}

export interface Upstream {
  /**
   * Sends one request, retrying what is worth retrying. `mayStart` is asked just before each
   * attempt goes on the wire (after any wait for a free slot); when it says no before the first
   * attempt, the request never ran and the answer is undefined. No attempt starts after `deadlineMs`.
   */
  send(request: UpstreamRequest, options: SendOptions): Promise<UpstreamResult | undefined>;
}

/** A route's limits as they stand, for tests and logs. */
export interface RouteStatus {
  /** The model name or pattern of the route; `default` for UPSTREAM_BASE_URL. */
  route: string;
  /** Requests allowed in flight now (adaptive, at most maxConcurrency). */
  concurrencyLimit: number;
  maxConcurrency: number;
  inFlight: number;
  /** Requests waiting for a slot or for rate-limit tokens. */
  waiting: number;
}

/**
 * Picks the upstream that serves a model. Each route has one upstream (and so one set of limits)
 * shared by every batch whose model it serves.
 */
export interface UpstreamRouter {
  route(model: string): Upstream | undefined;
  /** The name of the route serving a model (its pattern, `default`, or batch-test-model), for quotas and throughput. */
  routeOf?(model: string): string | undefined;
  /** Removes every configured upstream key from text (for error messages and logs). */
  redactor?: Redactor;
  /** Every HTTP route's limits as they stand. */
  status?(): RouteStatus[];
}
