import { SignJWT } from 'jose';
import { describe, expect, it, vi } from 'vitest';
import {
  checkSignedToken,
  isJwt,
  localSigningSecrets,
  newSignedApiKey,
  SIGNED_API_KEY_SHAPE,
  storedSigningSecrets,
} from '../../../shared/api/signed-tokens.js';

const NOW = Date.UTC(2026, 11, 3);
const sign = (payload: Record<string, unknown>, secret: string, alg = 'HS256') =>
  new SignJWT(payload).setProtectedHeader({ alg, sign_type: 'SIGN' }).sign(new TextEncoder().encode(secret));

describe("Zhipu's signed tokens", () => {
  const { key, id, secret } = newSignedApiKey();
  const lookup = async (asked: string) => (asked === id ? secret : undefined);

  it('makes id.secret keys of one shape', () => {
    expect(key).toMatch(SIGNED_API_KEY_SHAPE);
    expect(key).toBe(`${id}.${secret}`);
    expect(newSignedApiKey().key).not.toBe(key);
  });

  it('takes a token signed with the secret as the key, exp in milliseconds or seconds', async () => {
    expect(await checkSignedToken(await sign({ api_key: id, exp: NOW + 60_000, timestamp: NOW }, secret), lookup, NOW)).toEqual({
      ok: true,
      key,
    });
    expect(await checkSignedToken(await sign({ api_key: id, exp: NOW / 1000 + 60 }, secret), lookup, NOW)).toEqual({ ok: true, key });
  });

  it('refuses expired, unsigned, wrongly signed, unknown and exp-less tokens', async () => {
    const check = async (token: string) => checkSignedToken(token, lookup, NOW);
    expect(await check(await sign({ api_key: id, exp: NOW - 1, timestamp: NOW - 60_000 }, secret))).toEqual({
      ok: false,
      problem: 'expired',
    });
    expect(await check(await sign({ api_key: id, exp: NOW / 1000 - 1 }, secret))).toEqual({ ok: false, problem: 'expired' });
    expect(await check(await sign({ api_key: id, exp: NOW + 60_000 }, 'wrong'))).toEqual({ ok: false, problem: 'invalid' });
    expect(await check(await sign({ api_key: id, exp: NOW + 60_000 }, secret, 'HS384'))).toEqual({ ok: false, problem: 'invalid' });
    expect(await check(await sign({ api_key: 'f'.repeat(32), exp: NOW + 60_000 }, secret))).toEqual({ ok: false, problem: 'invalid' });
    expect(await check(await sign({ api_key: id }, secret))).toEqual({ ok: false, problem: 'invalid' });
    const unsigned = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ api_key: id, exp: NOW + 1 })).toString('base64url')}.x`;
    expect(await check(unsigned)).toEqual({ ok: false, problem: 'invalid' });
    expect(await check('not.a.jwt')).toEqual({ ok: false, problem: 'invalid' });
  });

  it('tells a JWT from a key', () => {
    expect(isJwt('a.b.c')).toBe(true);
    expect(isJwt(key)).toBe(false);
    expect(isJwt('sk-batch-abc')).toBe(false);
  });

  it('finds the secrets of the id.secret keys among API_KEYS', async () => {
    const secrets = localSigningSecrets(
      new Map([
        [key, 'p'],
        ['plain-key', 'q'],
        ['.x', 'r'],
      ]),
    );
    expect(await secrets(id)).toBe(secret);
    expect(await secrets('plain-key')).toBeUndefined();
    expect(await secrets('')).toBeUndefined();
  });

  it('decrypts a stored secret once per container, and remembers unknown ids briefly', async () => {
    let now = NOW;
    const read = vi.fn(async (asked: string) => (asked === id ? 'ciphertext' : undefined));
    const decrypt = vi.fn(async (_id: string, ciphertext: string) => (ciphertext === 'ciphertext' ? secret : 'x'));
    const secrets = storedSigningSecrets(read, decrypt, { clock: { now: () => now }, missTtlMs: 1_000 });
    expect(await secrets(id)).toBe(secret);
    expect(await secrets(id)).toBe(secret);
    expect(decrypt).toHaveBeenCalledTimes(1);
    const unknown = 'a'.repeat(32);
    expect(await secrets(unknown)).toBeUndefined();
    expect(await secrets(unknown)).toBeUndefined();
    expect(read).toHaveBeenCalledTimes(2);
    now += 1_001;
    expect(await secrets(unknown)).toBeUndefined();
    expect(read).toHaveBeenCalledTimes(3);
    // Not a signed key's id: no read at all.
    expect(await secrets('../etc')).toBeUndefined();
    expect(read).toHaveBeenCalledTimes(3);
  });
});
