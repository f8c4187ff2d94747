// Reading what a client sent, with the clear 400 a mistake deserves.
import type { MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { z } from 'zod';
import { badRequest, requestTooLarge } from './errors.js';

export const DEFAULT_MAX_JSON_BODY_BYTES = 1024 * 1024;

/**
 * Caps a JSON route's body at `maxBytes`: 413 request_too_large at once when Content-Length says
 * more, or as soon as a chunked body passes it; the rest is never read into memory.
 */
export function jsonBodyLimit(maxBytes: number): MiddlewareHandler {
  return bodyLimit({
    maxSize: maxBytes,
    onError: () => {
      throw requestTooLarge(maxBytes);
    },
  });
}

/** Checks `value` against `schema`; the first problem becomes a 400 naming the parameter. */
export function parse<T extends z.ZodType>(schema: T, value: unknown): z.infer<T> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const param = issue.path.length ? issue.path.map(String).join('.') : null;
  throw badRequest(param ? `Invalid '${param}': ${issue.message}.` : `${issue.message}.`, param);
}

/** The request body as JSON, or a 400 when it is empty or not JSON. */
export async function jsonBody(c: { req: { text(): Promise<string> } }): Promise<unknown> {
  const text = await c.req.text();
  if (!text.trim()) throw badRequest('The request body is empty; send a JSON object.');
  try {
    return JSON.parse(text);
  } catch {
    throw badRequest('The request body is not valid JSON.', null, 'invalid_json');
  }
}
