// The OpenAI error envelope: {"error": {"message", "type", "param", "code"}}, all four keys always there.
export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

export class ApiError extends Error {
  constructor(
    readonly status: 400 | 401 | 403 | 404 | 409 | 413 | 415 | 429 | 500 | 503,
    message: string,
    readonly type: string = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Headers the answer carries beside the envelope (e.g. Retry-After). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }

  toBody(): ErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export const badRequest = (message: string, param: string | null = null, code: string | null = null) =>
  new ApiError(400, message, 'invalid_request_error', param, code);

/** A client's string (an id, a window) as an answer quotes it: it may be of any length, and an answer repeats at most 64 characters. */
export function quoted(text: string): string {
  return text.length > 64 ? `${text.slice(0, 64)}…` : text;
}

export const notFound = (what: 'file' | 'batch' | 'upload' | 'webhook endpoint', id: string, param: string | null = null) =>
  new ApiError(404, `No ${what} found with id '${quoted(id)}'.`, 'invalid_request_error', param, 'not_found');

export const conflict = (message: string, code: string | null = null) => new ApiError(409, message, 'invalid_request_error', null, code);

export const tooLarge = (message: string, param: string | null = null) =>
  new ApiError(413, message, 'invalid_request_error', param, 'file_too_large');

/** 413 for a JSON body over MAX_JSON_BODY_BYTES (files have their own limits and codes). */
export const requestTooLarge = (maxBytes: number) =>
  new ApiError(
    413,
    `The request body is larger than the ${maxBytes} bytes this service accepts for JSON (MAX_JSON_BODY_BYTES).`,
    'invalid_request_error',
    null,
    'request_too_large',
    // The rest of the body was never read: a client must not send its next request on this connection.
    { connection: 'close' },
  );

export const internalError = () =>
  new ApiError(500, 'The server had an error while processing your request. Please retry.', 'server_error');

/** 503: a retry is expected to succeed; Retry-After (which the openai SDK honours) says when. */
export const unavailable = (message: string, code: string | null, retryAfterSeconds: number) =>
  new ApiError(503, message, 'server_error', null, code, { 'retry-after': String(retryAfterSeconds) });
