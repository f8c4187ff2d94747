// Stored API keys (AWS): a key that cannot be one of ours is refused without a lookup, an unknown
// key is remembered as unknown for half a minute, and a flood of unknown keys never pushes a found
// key out of the cache.
import { describe, expect, it } from 'vitest';
import { apiKeyRecord, hashApiKey, newApiKey, storedApiKeys } from '../../../shared/api/api-keys.js';
import type { ApiKeyRecord } from '../../../shared/batch/model.js';

function keyStore(records: ApiKeyRecord[]) {
  const lookups: string[] = [];
  const byHash = new Map(records.map((record) => [record.keyHash, record]));
  return {
    lookups,
    meta: {
      getApiKey: async (keyHash: string) => {
        lookups.push(keyHash);
        return byHash.get(keyHash);
      },
    },
  };
}

describe('stored API keys', () => {
  it('refuses a key of another shape without asking the store', async () => {
    const { meta, lookups } = keyStore([]);
    const resolve = storedApiKeys(meta, { clock: { now: () => 0 } });
    for (const key of ['', 'test', 'x'.repeat(10_000), `${newApiKey()}x`, 'sk-batch-short', `sk-batch-${'!'.repeat(40)}`]) {
      expect(await resolve(key)).toBeUndefined();
    }
    expect(lookups).toEqual([]);
  });

  it('remembers an unknown key for 30 s, a found one for 60 s', async () => {
    let now = 0;
    const known = newApiKey();
    const { meta, lookups } = keyStore([apiKeyRecord(known, 'alpha', 0)]);
    const resolve = storedApiKeys(meta, { clock: { now: () => now } });
    const unknown = newApiKey();
    expect(await resolve(unknown)).toBeUndefined();
    expect(await resolve(known)).toBe('alpha');
    now = 29_999;
    expect(await resolve(unknown)).toBeUndefined();
    expect(await resolve(known)).toBe('alpha');
    expect(lookups).toHaveLength(2);
    now = 30_000;
    expect(await resolve(unknown)).toBeUndefined();
    expect(lookups).toEqual([hashApiKey(unknown), hashApiKey(known), hashApiKey(unknown)]);
    now = 60_000;
    expect(await resolve(known)).toBe('alpha');
    expect(lookups).toHaveLength(4);
  });

  it('keeps found keys cached through a flood of unknown ones', async () => {
    const known = newApiKey();
    const { meta, lookups } = keyStore([apiKeyRecord(known, 'alpha', 0)]);
    const resolve = storedApiKeys(meta, { clock: { now: () => 0 }, maxEntries: 100 });
    expect(await resolve(known)).toBe('alpha');
    for (let i = 0; i < 1_000; i++) await resolve(newApiKey());
    lookups.length = 0;
    expect(await resolve(known)).toBe('alpha');
    expect(lookups).toEqual([]);
  });
});
