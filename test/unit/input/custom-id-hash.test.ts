// The custom_id hashes validation remembers ids by, and the set that holds them.
import { describe, expect, it } from 'vitest';
import { HashSet64, hashBytes, hashOut } from '../../../shared/input/custom-id-hash.js';

describe('HashSet64', () => {
  it('adds, finds and grows', () => {
    const set = new HashSet64(16);
    let added = 0;
    let found = 0;
    for (let i = 0; i < 10_000; i++) if (!set.add(i * 7919, i)) added++;
    for (let i = 0; i < 10_000; i++) if (set.add(i * 7919, i)) found++;
    expect([added, found]).toEqual([10_000, 10_000]);
    expect(set.has(0, 0)).toBe(true); // (0, 0) is stored as (1, 0): never mistaken for an empty slot
    expect(set.has(5, 5)).toBe(false);
    expect(set.size).toBe(10_000);
  });

  it('hashes equal bytes equally and depends on the seed', () => {
    const a = Buffer.from('xx-request-1');
    hashBytes(a, 3, a.length, 7);
    const first = [hashOut.h1, hashOut.h2];
    hashBytes(Buffer.from('request-1'), 0, 9, 7);
    expect([hashOut.h1, hashOut.h2]).toEqual(first);
    hashBytes(Buffer.from('request-1'), 0, 9, 8);
    expect([hashOut.h1, hashOut.h2]).not.toEqual(first);
  });
});
