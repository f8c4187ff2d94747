import { createHash, randomBytes } from 'node:crypto';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

// Random bytes are drawn 4 KiB at a time: one call into the CSPRNG per ~150 tokens instead of one
// per token (a result line needs an id, and the worker writes a thousand lines a second).
let pool = Buffer.alloc(0);
let used = 0;
function takeRandom(count: number): Buffer {
  if (used + count > pool.length) {
    pool = randomBytes(Math.max(4096, count));
    used = 0;
  }
  used += count;
  return pool.subarray(used - count, used);
}

/** A random, URL-safe token: 24 characters carry about 143 bits. */
export function randomToken(length = 24): string {
  const bytes = takeRandom(length);
  let out = '';
  // 248 = 4 * 62: values at or above it are skipped, so every character is equally likely.
  for (const byte of bytes) if (byte < 248) out += ALPHABET[byte % 62];
  return out.length >= length ? out.slice(0, length) : out + randomToken(length - out.length);
}

export const newFileId = () => `file-${randomToken()}`;
export const newBatchId = () => `batch_${randomToken()}`;
export const newRequestLineId = () => `batch_req_${randomToken()}`;
export const newAttemptId = () => randomToken(12);
export const newUploadId = () => `upload_${randomToken()}`;
export const newUploadPartId = () => `part_${randomToken()}`;
export const newWebhookEndpointId = () => `whe_${randomToken()}`;

/**
 * An id that depends only on `seed` (a step that runs twice, a repeated request, makes the same
 * one): `prefix` and 24 letters or digits of the seed's SHA-256, the shape of the random ones.
 */
export function derivedId(prefix: string, seed: string): string {
  const digest = createHash('sha256').update(seed).digest('base64url').replace(/[-_]/g, '');
  return `${prefix}${digest.slice(0, 24)}`;
}

/**
 * The shapes of the ids this service hands out: random ones (above) and derived ones (a batch's
 * output and error files, an upload's file) alike are a prefix and 24 letters or digits. An id of
 * another shape cannot name anything here, so the API answers it without asking storage (whose keys
 * have limits of their own: DynamoDB's is 2,048 bytes).
 */
const ID_SHAPES = {
  file: /^file-[A-Za-z0-9]{24}$/,
  batch: /^batch_[A-Za-z0-9]{24}$/,
  upload: /^upload_[A-Za-z0-9]{24}$/,
  part: /^part_[A-Za-z0-9]{24}$/,
  webhook_endpoint: /^whe_[A-Za-z0-9]{24}$/,
} as const;

export type IdKind = keyof typeof ID_SHAPES;

/** Whether `id` has the shape of one of our ids of this kind (it may still name nothing). */
export function isIdOf(kind: IdKind, id: string): boolean {
  return ID_SHAPES[kind].test(id);
}
