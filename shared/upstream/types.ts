/** One request line, ready to send: the url is normalised to its /v1 form. */
export interface UpstreamRequest {
  url: string;
  body: Record<string, unknown>;
}

/** What became of one request: an HTTP answer (any status), or a failure with no usable answer. */
export type UpstreamResult =
  | { kind: 'response'; statusCode: number; requestId: string; body: unknown }
  | { kind: 'error'; code: string; message: string };

export interface SendOptions {
  deadlineMs: number;
  mayStart: () => boolean;
}

export interface Upstream {
  /**
   * Sends one request, retrying what is worth retrying. `mayStart` is asked just before each
   * attempt goes on the wire (after any wait for a free slot); when it says no before the first
   * attempt, the request never ran and the answer is undefined. No attempt starts after `deadlineMs`.
   */
  send(request: UpstreamRequest, options: SendOptions): Promise<UpstreamResult | undefined>;
}

/** Picks the upstream that serves a model. */
export interface UpstreamRouter {
  route(model: string): Upstream | undefined;
}
