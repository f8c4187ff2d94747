// Requests and tokens per minute on a clock the test drives: pacing, first come first served,
// requests larger than the bucket, corrections from usage, and waiters that stop wanting a turn.
import { describe, expect, it } from 'vitest';
import type { Clock } from '../../../shared/ports.js';
import { estimateTokens, RateLimiter } from '../../../shared/upstream/rate-limit.js';

/** Sleeps return at once and move time forward. */
function fakeClock(start = 0) {
  let now = start;
  const clock: Clock = {
    now: () => now,
    sleep: async (ms) => {
      await Promise.resolve();
      now += ms;
    },
  };
  return { clock, advance: (ms: number) => void (now += ms), now: () => now };
}

describe('RateLimiter', () => {
  it('paces requests per minute: one second of burst, then the rate', async () => {
    const time = fakeClock();
    const limiter = new RateLimiter({ requestsPerMinute: 120 }, time.clock);
    const grantedAt: number[] = [];
    await Promise.all(Array.from({ length: 12 }, () => limiter.acquire(1).then(() => grantedAt.push(time.now()))));
    // 2 at once (a second's worth), then one every 500 ms.
    expect(grantedAt.slice(0, 2)).toEqual([0, 0]);
    expect(grantedAt.at(-1)).toBeGreaterThanOrEqual(4_999);
    expect(grantedAt.at(-1)).toBeLessThanOrEqual(5_010);
    for (let i = 2; i < grantedAt.length; i++) expect(grantedAt[i]! - grantedAt[i - 1]!).toBeGreaterThanOrEqual(499);
  });

  it('holds a minute to the limit over a long run', async () => {
    const time = fakeClock();
    const limiter = new RateLimiter({ requestsPerMinute: 6_000, tokensPerMinute: 60_000 }, time.clock);
    await Promise.all(Array.from({ length: 2_000 }, () => limiter.acquire(50)));
    // 2,000 requests of 50 tokens: tokens bind (1,000 a second → 20 requests a second, not 100),
    // so 100 s less the first second's burst.
    expect(time.now()).toBeGreaterThanOrEqual(98_000);
    expect(time.now()).toBeLessThanOrEqual(100_500);
  });

  it('lets a request larger than the bucket go when the bucket is full, leaving a debt', async () => {
    const time = fakeClock();
    const limiter = new RateLimiter({ tokensPerMinute: 6_000 }, time.clock); // 100 tokens a second, bucket of 100
    expect(await limiter.acquire(1_000)).toBe(true);
    expect(limiter.levels().tokens).toBe(-900);
    const next = limiter.acquire(10);
    await next;
    // The debt is paid back at 100 a second before the next 10 tokens are there: 9.1 s.
    expect(time.now()).toBeGreaterThanOrEqual(9_100);
    expect(time.now()).toBeLessThanOrEqual(9_200);
  });

  it('serves waiters first come first served, and corrects charges from usage', async () => {
    // A clock whose sleeps never end: a waiter can only be served by a correction.
    const frozen: Clock = { now: () => 0, sleep: () => new Promise(() => {}) };
    const limiter = new RateLimiter({ tokensPerMinute: 6_000 }, frozen);
    const order: string[] = [];
    await limiter.acquire(100);
    const big = limiter.acquire(80).then(() => order.push('big'));
    const small = limiter.acquire(1).then(() => order.push('small'));
    // The first request used only 10 tokens: 90 come back, enough for both waiters at once.
    limiter.adjust(10 - 100);
    await Promise.all([big, small]);
    expect(order).toEqual(['big', 'small']);
    limiter.adjust(500);
    expect(limiter.levels().tokens).toBeLessThan(-400);
  });

  it('skips a waiter that no longer wants its turn, taking nothing for it', async () => {
    const time = fakeClock();
    const limiter = new RateLimiter({ requestsPerMinute: 60 }, time.clock);
    await limiter.acquire(1);
    let wanted = true;
    const abandoned = limiter.acquire(1, () => wanted);
    wanted = false;
    expect(await abandoned).toBe(false);
    const next = await limiter.acquire(1);
    expect(next).toBe(true);
    expect(time.now()).toBeLessThanOrEqual(1_010);
    limiter.release(1);
    expect(limiter.levels().requests).toBe(1);
  });

  it('is skipped entirely when no limit is set', () => {
    expect(new RateLimiter({}, fakeClock().clock).unlimited).toBe(true);
    expect(new RateLimiter({ tokensPerMinute: 1 }, fakeClock().clock).unlimited).toBe(false);
  });
});

describe('estimateTokens', () => {
  it('counts about four characters a token of what is sent, plus the most that may come back', () => {
    const chat = {
      model: 'm',
      messages: [
        { role: 'system', content: 'x'.repeat(40) },
        { role: 'user', content: [{ type: 'text', text: 'y'.repeat(40) }] },
      ],
      max_tokens: 100,
    };
    expect(estimateTokens(chat)).toBe(20 + 100);
    expect(estimateTokens({ model: 'm', messages: [{ role: 'user', content: 'hi' }], max_completion_tokens: 7 })).toBe(1 + 7);
    expect(estimateTokens({ model: 'e', input: ['a'.repeat(8), 'b'.repeat(8)] })).toBe(4);
    expect(estimateTokens({ model: 'r', input: 'z'.repeat(400), instructions: 'q'.repeat(400), max_output_tokens: 10 })).toBe(210);
    expect(estimateTokens({ model: 'c', prompt: 'p'.repeat(12) })).toBe(3);
  });
});
