// Behaviour every QuotaStore must have: a holder takes its amount once and gives it back once, the
// counters never pass their limits (also when many take at once), and what is given back is room again.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { QuotaStore } from '../../shared/ports.js';
import { race as raceWrites } from '../support/race.js';

let seq = 0;
const freshKey = () => `project:team-${process.pid}-${Date.now()}-${seq++}`;

export interface QuotaStoreSetup {
  store: QuotaStore;
  close(): Promise<void>;
  /**
   * The backend lets two conditional writes to one item both pass (moto), where DynamoDB does not:
   * the racing case sends its takes one at a time and expects exactly the same outcome.
   */
  serializeWritesToOneItem?: boolean;
}

export function quotaStoreContract(name: string, open: () => Promise<QuotaStoreSetup>): void {
  describe(name, () => {
    let store: QuotaStore;
    let close: () => Promise<void>;
    let serialize = false;
    beforeAll(async () => {
      const built = await open();
      ({ store, close } = built);
      serialize = built.serializeWritesToOneItem ?? false;
    });

    const race = <T>(calls: (() => Promise<T>)[]) => raceWrites(calls, serialize);
    afterAll(async () => {
      await close?.();
    });

    it('takes within the limits, once per holder, and gives back once', async () => {
      const key = freshKey();
      const limits = { requests: 100, tokens: 1_000 };
      expect(await store.takeQuota(key, 'batch_a', { requests: 60, tokens: 500 }, limits)).toBe('taken');
      // A step that runs again takes nothing twice.
      expect(await store.takeQuota(key, 'batch_a', { requests: 60, tokens: 500 }, limits)).toBe('held');
      expect(await store.getQuota(key)).toEqual({ requests: 60, tokens: 500, holders: ['batch_a'] });
      // 60 + 50 > 100: refused, and nothing changes.
      expect(await store.takeQuota(key, 'batch_b', { requests: 50, tokens: 10 }, limits)).toBe('full');
      // Tokens alone can refuse too.
      expect(await store.takeQuota(key, 'batch_b', { requests: 10, tokens: 600 }, limits)).toBe('full');
      expect(await store.takeQuota(key, 'batch_b', { requests: 40, tokens: 500 }, limits)).toBe('taken');
      expect(await store.getQuota(key)).toEqual({ requests: 100, tokens: 1_000, holders: ['batch_a', 'batch_b'] });
      expect(await store.returnQuota(key, 'batch_a', { requests: 60, tokens: 500 })).toBe(true);
      expect(await store.returnQuota(key, 'batch_a', { requests: 60, tokens: 500 })).toBe(false);
      expect(await store.getQuota(key)).toEqual({ requests: 40, tokens: 500, holders: ['batch_b'] });
      expect(await store.takeQuota(key, 'batch_c', { requests: 60, tokens: 0 }, { requests: 100 })).toBe('taken');
    });

    it('refuses an amount larger than the limit itself without a write, and takes anything without limits', async () => {
      const key = freshKey();
      expect(await store.takeQuota(key, 'batch_a', { requests: 101, tokens: 1 }, { requests: 100 })).toBe('full');
      expect(await store.getQuota(key)).toBeUndefined();
      expect(await store.takeQuota(key, 'batch_a', { requests: 1e9, tokens: 1e12 }, {})).toBe('taken');
      expect(await store.returnQuota(key, 'nobody', { requests: 1, tokens: 1 })).toBe(false);
    });

    it('never passes the limit when many take at once', async () => {
      const key = freshKey();
      const outcomes = await race(
        Array.from({ length: 12 }, (_, i) => () => store.takeQuota(key, `batch_${i}`, { requests: 30, tokens: 0 }, { requests: 100 })),
      );
      expect(outcomes.filter((outcome) => outcome === 'taken')).toHaveLength(3);
      const usage = await store.getQuota(key);
      expect(usage?.requests).toBe(90);
      expect(usage?.holders).toHaveLength(3);
    });
  });
}
