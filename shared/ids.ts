import { randomBytes } from 'node:crypto';

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
