// Adaptive concurrency: backs off on a run of 429s and on a latency rise, shrugs off a few stray
// 429s, grows back on success, never leaves [1, max]; and HttpUpstream uses it per route.
import { describe, expect, it } from 'vitest';
import type { Clock } from '../../../shared/ports.js';
import { AdaptiveConcurrency, AdaptiveLimit, type SampleOutcome } from '../../../shared/upstream/adaptive-concurrency.js';
import { HttpUpstream } from '../../../shared/upstream/http-upstream.js';

function manualClock() {
  let now = 0;
  const clock: Clock = { now: () => now, sleep: async (ms) => void (now += ms) };
  return { clock, advance: (ms: number) => void (now += ms), now: () => now };
}

/** Feeds `count` samples of one kind, each started now and in a fully used limit. */
function feed(limit: AdaptiveLimit, time: ReturnType<typeof manualClock>, count: number, outcome: SampleOutcome, latencyMs = 100) {
  for (let i = 0; i < count; i++) {
    time.advance(1);
    limit.sample(time.now(), latencyMs, outcome, limit.limit);
  }
}

describe('AdaptiveLimit', () => {
  it('backs off multiplicatively on a window with many 429s, once per burst, down to 1 at worst', () => {
    const time = manualClock();
    const limit = new AdaptiveLimit({ max: 100, clock: time.clock });
    expect(limit.limit).toBe(100);
    feed(limit, time, 100, 'overload');
    expect(limit.limit).toBe(75);
    // Answers to requests sent before the decrease describe the old limit: not counted again.
    for (let i = 0; i < 100; i++) limit.sample(time.now() - 5, 100, 'overload', 100);
    expect(limit.limit).toBe(75);
    for (let round = 0; round < 40; round++) feed(limit, time, Math.max(10, limit.limit), 'overload');
    expect(limit.limit).toBe(1);
  });

  it('does not back off for a few stray 429s (10% of answers)', () => {
    const time = manualClock();
    const limit = new AdaptiveLimit({ max: 64, clock: time.clock });
    for (let round = 0; round < 50; round++) {
      feed(limit, time, 58, 'ok');
      feed(limit, time, 6, 'overload');
    }
    expect(limit.limit).toBe(64);
  });

  it('grows back on success while the limit is used, up to max and no further', () => {
    const time = manualClock();
    const limit = new AdaptiveLimit({ max: 40, initial: 4, clock: time.clock });
    const seen: number[] = [];
    for (let round = 0; round < 30; round++) {
      feed(limit, time, Math.max(10, limit.limit), 'ok');
      seen.push(limit.limit);
    }
    expect(seen[0]).toBe(5);
    expect(Math.max(...seen)).toBe(40);
    expect(seen.at(-1)).toBe(40);
    // Not used: no growth (an idle route does not inflate its limit).
    const idle = new AdaptiveLimit({ max: 40, initial: 10, clock: time.clock });
    for (let i = 0; i < 50; i++) idle.sample(time.now(), 100, 'ok', 2);
    expect(idle.limit).toBe(10);
  });

  it('backs off when latency doubles over its baseline, not for small rises', () => {
    const time = manualClock();
    const limit = new AdaptiveLimit({ max: 50, clock: time.clock });
    feed(limit, time, 50, 'ok', 400);
    feed(limit, time, 50, 'ok', 600);
    expect(limit.limit).toBe(50);
    feed(limit, time, 50, 'ok', 1_200);
    expect(limit.limit).toBe(45);
    // Fast answers whose latency doubles by a few milliseconds: our own event loop, not the upstream.
    const fast = new AdaptiveLimit({ max: 50, clock: time.clock });
    feed(fast, time, 50, 'ok', 5);
    feed(fast, time, 50, 'ok', 30);
    expect(fast.limit).toBe(50);
  });

  it('reports each change', () => {
    const time = manualClock();
    const changes: unknown[] = [];
    const limit = new AdaptiveLimit({ max: 20, clock: time.clock, onChange: (change) => changes.push(change) });
    feed(limit, time, 20, 'overload');
    expect(changes).toEqual([
      {
        limit: 15,
        previous: 20,
        reason: 'overload',
        window: { samples: 20, overloads: 20, meanLatencyMs: undefined, baselineMs: undefined },
      },
    ]);
  });
});

describe('AdaptiveConcurrency', () => {
  it('admits at most the current limit, first come first served', async () => {
    const time = manualClock();
    const gate = new AdaptiveConcurrency({ max: 2, clock: time.clock });
    const order: number[] = [];
    const permits = await Promise.all([gate.acquire(), gate.acquire()]);
    const third = gate.acquire().then((p) => (order.push(3), p));
    const fourth = gate.acquire().then((p) => (order.push(4), p));
    expect(gate.inFlight).toBe(2);
    expect(gate.waiting).toBe(2);
    gate.release(permits[0]!, { latencyMs: 10, outcome: 'ok' });
    const p3 = await third;
    expect(order).toEqual([3]);
    gate.release(permits[1]!);
    gate.release(p3);
    gate.release(await fourth);
    expect(order).toEqual([3, 4]);
    expect(gate.inFlight).toBe(0);
  });
});

describe('HttpUpstream with adaptive concurrency', () => {
  it('lowers the route limit under a storm of 429s, keeps attempts on the wire under it, and recovers', async () => {
    const time = manualClock();
    let inFlight = 0;
    let overLimit = 0;
    let storm = true;
    let upstream: HttpUpstream | undefined;
    const fetch = (async () => {
      inFlight++;
      if (inFlight > upstream!.concurrencyLimit) overLimit++;
      await new Promise((resolve) => setImmediate(resolve));
      inFlight--;
      return storm
        ? new Response('{"error":{}}', { status: 429, headers: { 'retry-after-ms': '1' } })
        : new Response('{"ok":true}', { status: 200 });
    }) as unknown as typeof globalThis.fetch;
    upstream = new HttpUpstream({
      baseUrl: 'http://u/v1',
      apiKey: undefined,
      concurrency: 32,
      timeoutMs: 1_000,
      maxAttempts: 1,
      clock: time.clock,
      fetch,
    });
    const request = { url: '/v1/chat/completions', body: { model: 'm' } };
    const send = () => upstream!.send(request, { deadlineMs: Infinity, mayStart: () => true });
    await Promise.all(Array.from({ length: 400 }, send));
    expect(upstream.concurrencyLimit).toBeLessThan(8);
    storm = false;
    await Promise.all(Array.from({ length: 1_500 }, send));
    expect(upstream.concurrencyLimit).toBe(32);
    expect(upstream.status()).toMatchObject({ maxConcurrency: 32, concurrencyLimit: 32, inFlight: 0 });
    // A decrease lets the attempts already on the wire finish; no new one starts above the limit.
    expect(overLimit).toBeLessThanOrEqual(32);
  });
});
