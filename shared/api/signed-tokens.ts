// Zhipu's signed tokens. A Zhipu-style key is `id.secret`; with token caching on, the zhipuai SDK
// sends not the key but an HS256 JWT signed with the secret half, whose payload names the id
// (`api_key`) and carries `exp` and `timestamp` in milliseconds, its header `sign_type: SIGN`.
// Verifying one takes the key's secret, not only its hash: locally API_KEYS holds the keys; in
// AWS the secret is stored encrypted with the stack's KMS key (`npm run keys -- create --signed`)
// and decrypted on first use in a container. A token that verifies stands for the key
// `id.secret` itself, so it resolves to the key's project and is revoked with it.
import { randomBytes } from 'node:crypto';
import { decodeJwt, decodeProtectedHeader, errors, jwtVerify } from 'jose';
import { randomToken } from '../ids.js';
import type { Clock } from '../ports.js';

/** A signing key's secret by its id, or undefined for an unknown id. */
export type SigningSecretLookup = (id: string) => Promise<string | undefined>;

export type TokenCheck = { ok: true; key: string } | { ok: false; problem: 'expired' | 'invalid' };

const SIGNED_SECRET_CHARACTERS = 40;
/** The shape of the signed keys `npm run keys -- create --signed` makes: a 32-hex id, a dot, the secret. */
export const SIGNED_API_KEY_SHAPE = new RegExp(`^[0-9a-f]{32}\\.[A-Za-z0-9]{${SIGNED_SECRET_CHARACTERS}}$`);

export function newSignedApiKey(): { key: string; id: string; secret: string } {
  const id = randomBytes(16).toString('hex');
  const secret = randomToken(SIGNED_SECRET_CHARACTERS);
  return { key: `${id}.${secret}`, id, secret };
}

/** Whether a bearer credential is a JWT (three base64url parts) rather than a key. */
export function isJwt(credential: string): boolean {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(credential);
}

/** Seconds or milliseconds since the epoch as milliseconds: Zhipu's SDK writes milliseconds, other clients seconds. */
const asMs = (time: number) => (time > 100_000_000_000 ? time : time * 1000);

/**
 * Checks a signed token: HS256 only, signed with the secret of the id its payload names, not
 * expired. Answers the key it stands for (`id.secret`).
 */
export async function checkSignedToken(token: string, lookup: SigningSecretLookup, nowMs: number): Promise<TokenCheck> {
  let id: unknown;
  try {
    if (decodeProtectedHeader(token).alg !== 'HS256') return { ok: false, problem: 'invalid' };
    id = decodeJwt(token).api_key;
  } catch {
    return { ok: false, problem: 'invalid' };
  }
  if (typeof id !== 'string' || id.length === 0 || id.length > 128) return { ok: false, problem: 'invalid' };
  const secret = await lookup(id);
  if (secret === undefined) return { ok: false, problem: 'invalid' };
  try {
    // jose checks `exp` as seconds, so a millisecond `exp` (Zhipu's) always passes it: the check that counts is below.
    const { payload } = await jwtVerify(token, new TextEncoder().encode(secret), { algorithms: ['HS256'], currentDate: new Date(nowMs) });
    if (typeof payload.exp !== 'number') return { ok: false, problem: 'invalid' };
    if (asMs(payload.exp) <= nowMs) return { ok: false, problem: 'expired' };
  } catch (error) {
    return { ok: false, problem: error instanceof errors.JWTExpired ? 'expired' : 'invalid' };
  }
  return { ok: true, key: `${id}.${secret}` };
}

/** The secrets of the `id.secret` keys among API_KEYS (the local runtime). */
export function localSigningSecrets(apiKeys: ReadonlyMap<string, string>): SigningSecretLookup {
  const secrets = new Map<string, string>();
  for (const key of apiKeys.keys()) {
    const dot = key.indexOf('.');
    if (dot > 0 && dot < key.length - 1) secrets.set(key.slice(0, dot), key.slice(dot + 1));
  }
  return async (id) => secrets.get(id);
}

export interface StoredSigningSecretOptions {
  clock: Pick<Clock, 'now'>;
  /** How long an unknown id is remembered as unknown (a guessed id then costs no read). */
  missTtlMs?: number;
  /** Entries of each cache; a flood of unknown ids never evicts a known secret. */
  maxEntries?: number;
}

/**
 * Secrets stored encrypted (in AWS: the SIGNKEY item, encrypted with the stack's KMS key), read and
 * decrypted once per container, then kept: a secret never changes; a revoked key is refused by
 * its API key record, which is looked up as for a raw key.
 */
export function storedSigningSecrets(
  read: (id: string) => Promise<string | undefined>,
  decrypt: (id: string, ciphertext: string) => Promise<string>,
  options: StoredSigningSecretOptions,
): SigningSecretLookup {
  const missTtlMs = options.missTtlMs ?? 30_000;
  const maxEntries = options.maxEntries ?? 10_000;
  const known = new Map<string, Promise<string>>();
  const unknown = new Map<string, number>();
  const remember = <V>(cache: Map<string, V>, id: string, value: V) => {
    if (cache.size >= maxEntries) cache.delete(cache.keys().next().value!);
    cache.set(id, value);
  };
  return async (id) => {
    if (!/^[0-9a-f]{32}$/.test(id)) return undefined;
    const hit = known.get(id);
    if (hit) return hit;
    if ((unknown.get(id) ?? 0) > options.clock.now()) return undefined;
    const ciphertext = await read(id);
    if (ciphertext === undefined) {
      remember(unknown, id, options.clock.now() + missTtlMs);
      return undefined;
    }
    const secret = decrypt(id, ciphertext);
    remember(known, id, secret);
    // A failed decryption is not remembered: the next request tries again.
    secret.catch(() => known.delete(id));
    return secret;
  };
}
