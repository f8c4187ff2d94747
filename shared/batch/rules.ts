// The rules of a batch's create that hold wherever a batch comes from (the API and its dialects,
// a pipeline's definition): the endpoints a batch may run, its metadata, its completion window.
import { z } from 'zod';

export const BATCH_ENDPOINTS = [
  '/v1/responses',
  '/v1/chat/completions',
  '/v1/embeddings',
  '/v1/completions',
  '/v1/moderations',
  '/v1/images/generations',
  '/v1/images/edits',
  '/v1/videos',
] as const;

const METADATA_MAX_KEYS = 16;
const METADATA_MAX_KEY_LENGTH = 64;
const METADATA_MAX_VALUE_LENGTH = 512;

/**
 * Metadata: at most 16 string keys (≤ 64 characters) of string values (≤ 512), as a null-prototype
 * map, so a key may be any name (`constructor`, `toString`, `hasOwnProperty`...) and stays just a
 * key from here to the store and back. Only `__proto__` is refused: JavaScript objects cannot carry
 * it as data through every layer (zod's records and the DynamoDB unmarshaller drop it silently).
 */
export const metadataSchema = z.unknown().transform((value, ctx): Record<string, string> | null => {
  if (value === null) return null;
  if (typeof value !== 'object' || Array.isArray(value)) {
    ctx.addIssue({ code: 'custom', message: 'metadata must be an object of string values' });
    return z.NEVER;
  }
  const entries = Object.entries(value);
  if (entries.length > METADATA_MAX_KEYS) {
    ctx.addIssue({ code: 'custom', message: `metadata can have at most ${METADATA_MAX_KEYS} keys` });
    return z.NEVER;
  }
  const metadata: Record<string, string> = Object.create(null);
  for (const [key, item] of entries) {
    const problem =
      key === '__proto__'
        ? "'__proto__' cannot be a metadata key"
        : key.length > METADATA_MAX_KEY_LENGTH
          ? `metadata keys must be at most ${METADATA_MAX_KEY_LENGTH} characters`
          : typeof item !== 'string'
            ? 'metadata values must be strings'
            : item.length > METADATA_MAX_VALUE_LENGTH
              ? `metadata values must be at most ${METADATA_MAX_VALUE_LENGTH} characters`
              : undefined;
    if (problem) {
      ctx.addIssue({
        code: 'custom',
        message: problem,
        path: [key.length > METADATA_MAX_KEY_LENGTH ? `${key.slice(0, METADATA_MAX_KEY_LENGTH)}…` : key],
      });
      return z.NEVER;
    }
    metadata[key] = item as string;
  }
  return metadata;
});

// One spelling per duration: `<N>h`, and `<N>m` / `<N>s` only for a window under an hour (the short
// windows MIN_COMPLETION_WINDOW may allow for trying expiry). No spaces, signs, exponents or leading zeros.
const COMPLETION_WINDOW = /^([1-9][0-9]*)(h|m|s)$/;
const WINDOW_UNIT_MS = { h: 3_600_000, m: 60_000, s: 1_000 } as const;

/** A completion_window in milliseconds, or undefined when it is not one of the accepted spellings. */
export function parseCompletionWindow(window: string): number | undefined {
  const match = COMPLETION_WINDOW.exec(window);
  if (!match) return undefined;
  const unit = match[2] as keyof typeof WINDOW_UNIT_MS;
  const ms = Number(match[1]) * WINDOW_UNIT_MS[unit];
  return unit !== 'h' && ms >= WINDOW_UNIT_MS.h ? undefined : ms;
}
