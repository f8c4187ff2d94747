import { describe, expect, it } from 'vitest';
import { systemClock } from '../../../shared/adapters/local/system-clock.js';
import type { Clock } from '../../../shared/ports.js';
import { HttpUpstream, RETRIED_ANSWER_BYTES } from '../../../shared/upstream/http-upstream.js';
import { keyRedactor } from '../../../shared/upstream/redact.js';
import { ResponseBudget } from '../../../shared/upstream/response-budget.js';
import { startUpstreamSim } from '../../support/upstream-sim.js';

/** A clock whose sleeps return at once but move time forward, so backoffs are observable. */
function fakeClock(start = 1_000_000) {
  let now = start;
  const sleeps: number[] = [];
  const clock: Clock = {
    now: () => now,
    sleep: async (ms) => {
      sleeps.push(ms);
      now += ms;
    },
  };
  return { clock, sleeps };
}

function scriptedFetch(answers: (() => Response | Promise<Response>)[]) {
  const calls: { url: string; init: RequestInit }[] = [];
  const fetch = (async (url: string, init: RequestInit) => {
    calls.push({ url, init });
    const next = answers.shift();
    if (!next) throw new Error('no more scripted answers');
    return next();
  }) as unknown as typeof globalThis.fetch;
  return { fetch, calls };
}

const json =
  (status: number, body: unknown, headers: Record<string, string> = {}) =>
  () =>
    new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });

const request = { url: '/v1/chat/completions', body: { model: 'm', messages: [] } };

function upstream(fetch: typeof globalThis.fetch, clock: Clock, maxAttempts = 4) {
  return new HttpUpstream({
    baseUrl: 'http://upstream.test/v1',
    apiKey: 'sk-secret',
    concurrency: 2,
    timeoutMs: 1_000,
    maxAttempts,
    clock,
    fetch,
  });
}

describe('HttpUpstream', () => {
  it('posts to the base URL with the key, and returns the answer', async () => {
    const { clock } = fakeClock();
    const { fetch, calls } = scriptedFetch([json(200, { ok: true }, { 'x-request-id': 'req_1' })]);
    const result = await upstream(fetch, clock).send(request, { deadlineMs: Infinity, mayStart: () => true });
    expect(result).toEqual({ kind: 'response', statusCode: 200, requestId: 'req_1', body: { ok: true } });
    expect(calls[0]!.url).toBe('http://upstream.test/v1/chat/completions');
    expect((calls[0]!.init.headers as Record<string, string>).authorization).toBe('Bearer sk-secret');
  });

  it('retries 429 honouring retry-after-ms and Retry-After, then succeeds', async () => {
    const { clock, sleeps } = fakeClock();
    const { fetch, calls } = scriptedFetch([
      json(429, { error: {} }, { 'retry-after-ms': '250' }),
      json(429, { error: {} }, { 'retry-after': '2' }),
      json(200, { ok: true }),
    ]);
    const result = await upstream(fetch, clock).send(request, { deadlineMs: Infinity, mayStart: () => true });
    expect(result).toMatchObject({ statusCode: 200 });
    expect(calls).toHaveLength(3);
    expect(sleeps).toEqual([250, 2_000]);
  });

  it('treats a 4xx other than 429 as final at once', async () => {
    const { clock } = fakeClock();
    const { fetch, calls } = scriptedFetch([json(400, { error: { message: 'bad' } })]);
    const result = await upstream(fetch, clock).send(request, { deadlineMs: Infinity, mayStart: () => true });
    expect(result).toMatchObject({ statusCode: 400, body: { error: { message: 'bad' } } });
    expect(calls).toHaveLength(1);
  });

  it('gives up after maxAttempts with the last answer, backing off with jitter below the exponential cap', async () => {
    const { clock, sleeps } = fakeClock();
    const { fetch, calls } = scriptedFetch([json(500, {}), json(502, {}), json(503, { error: { message: 'last' } })]);
    const result = await upstream(fetch, clock, 3).send(request, { deadlineMs: Infinity, mayStart: () => true });
    expect(result).toMatchObject({ statusCode: 503, body: { error: { message: 'last' } } });
    expect(calls).toHaveLength(3);
    expect(sleeps[0]).toBeLessThanOrEqual(500);
    expect(sleeps[1]).toBeLessThanOrEqual(1_000);
  });

  it('retries connection failures and reports them without leaking the URL or key', async () => {
    const { clock } = fakeClock();
    const refused = () => Promise.reject(Object.assign(new TypeError('fetch failed'), { cause: { code: 'ECONNREFUSED' } }));
    const { fetch, calls } = scriptedFetch([refused, refused]);
    const result = await upstream(fetch, clock, 2).send(request, { deadlineMs: Infinity, mayStart: () => true });
    expect(result).toEqual({ kind: 'error', code: 'upstream_unreachable', message: 'The upstream could not be reached: ECONNREFUSED.' });
    expect(calls).toHaveLength(2);
    expect(JSON.stringify(result)).not.toMatch(/sk-secret|upstream\.test/);
  });

  it('does not wait for a retry that would land past the deadline, and marks the last answer unfinished', async () => {
    const { clock, sleeps } = fakeClock(0);
    const { fetch, calls } = scriptedFetch([json(429, {}, { 'retry-after': '5' })]);
    const result = await upstream(fetch, clock).send(request, { deadlineMs: 3_000, mayStart: () => true });
    expect(result).toMatchObject({ statusCode: 429, unfinished: true });
    expect(calls).toHaveLength(1);
    expect(sleeps).toEqual([]);
  });

  it('marks the last answer unfinished when a cancel comes between retries; a final answer is never unfinished', async () => {
    const { clock } = fakeClock();
    let allowed = true;
    const { fetch } = scriptedFetch([() => ((allowed = false), json(503, { error: { message: 'busy' } })())]);
    const result = await upstream(fetch, clock).send(request, { deadlineMs: Infinity, mayStart: () => allowed });
    expect(result).toMatchObject({ statusCode: 503, unfinished: true });
    const last = await upstream(scriptedFetch([json(500, {}), json(500, {})]).fetch, clock, 2).send(request, {
      deadlineMs: Infinity,
      mayStart: () => true,
    });
    expect(last).toMatchObject({ statusCode: 500 });
    expect(last?.unfinished).toBeUndefined();
  });

  it("keeps to the route's requests per minute, paced", async () => {
    const { clock } = fakeClock(0);
    const { fetch, calls } = scriptedFetch(Array.from({ length: 4 }, () => json(200, {})));
    const client = new HttpUpstream({
      baseUrl: 'http://u/v1',
      apiKey: undefined,
      concurrency: 4,
      timeoutMs: 1_000,
      maxAttempts: 1,
      clock,
      fetch,
      requestsPerMinute: 60,
    });
    await Promise.all(Array.from({ length: 4 }, () => client.send(request, { deadlineMs: Infinity, mayStart: () => true })));
    expect(calls).toHaveLength(4);
    // One at once (a second's worth), then one a second.
    expect(clock.now()).toBeGreaterThanOrEqual(3_000);
  });

  it('never starts a request that may not start (cancel or expiry)', async () => {
    const { clock } = fakeClock();
    const { fetch, calls } = scriptedFetch([]);
    expect(await upstream(fetch, clock).send(request, { deadlineMs: Infinity, mayStart: () => false })).toBeUndefined();
    expect(await upstream(fetch, clock).send(request, { deadlineMs: 0, mayStart: () => true })).toBeUndefined();
    expect(calls).toHaveLength(0);
  });

  it('keeps at most `concurrency` attempts on the wire', async () => {
    const { clock } = fakeClock();
    let inFlight = 0;
    let peak = 0;
    const fetch = (async () => {
      inFlight++;
      peak = Math.max(peak, inFlight);
      await new Promise((resolve) => setTimeout(resolve, 5));
      inFlight--;
      return new Response('{}', { status: 200 });
    }) as unknown as typeof globalThis.fetch;
    const client = upstream(fetch, clock);
    await Promise.all(Array.from({ length: 10 }, () => client.send(request, { deadlineMs: Infinity, mayStart: () => true })));
    expect(peak).toBe(2);
  });

  it('talks HTTP itself (undici) when no fetch is given: answers, keys, timeouts and resets', async () => {
    const sim = await startUpstreamSim({ latencyMs: 1, requireApiKey: 'sk-sim' });
    try {
      const make = (apiKey: string) =>
        new HttpUpstream({ baseUrl: sim.baseURL, apiKey, concurrency: 4, timeoutMs: 300, maxAttempts: 1, clock: systemClock });
      const send = (client: HttpUpstream) =>
        client.send(
          { url: '/v1/chat/completions', body: { model: 'm', messages: [{ role: 'user', content: 'hi' }] } },
          { deadlineMs: Infinity, mayStart: () => true },
        );
      expect(await send(make('sk-sim'))).toMatchObject({
        kind: 'response',
        statusCode: 200,
        requestId: expect.stringMatching(/^req_sim_/),
        body: { choices: [{ message: { content: 'echo: hi' } }] },
      });
      expect(await send(make('sk-wrong'))).toMatchObject({ statusCode: 401 });
      sim.configure({ hangRate: 1 });
      expect(await send(make('sk-sim'))).toEqual({
        kind: 'error',
        code: 'upstream_timeout',
        message: 'The upstream did not answer within 300 ms.',
      });
      sim.configure({ hangRate: 0, resetRate: 1 });
      expect(await send(make('sk-sim'))).toMatchObject({ kind: 'error', code: 'upstream_unreachable' });
    } finally {
      await sim.close();
    }
  });

  describe('answers read within a byte limit', () => {
    /** A body sent in pieces without a Content-Length, so only counting the bytes read can tell its size. */
    const streamed =
      (status: number, text: string, pieceBytes = 64 * 1024) =>
      () => {
        const bytes = Buffer.from(text);
        let offset = 0;
        const body = new ReadableStream<Uint8Array>({
          pull(controller) {
            if (offset >= bytes.length) return controller.close();
            controller.enqueue(bytes.subarray(offset, offset + pieceBytes));
            offset += pieceBytes;
          },
        });
        return new Response(body, { status, headers: { 'content-type': 'application/json' } });
      };
    const big = (bytes: number) => JSON.stringify({ data: 'x'.repeat(bytes) });
    const limited = (
      fetch: typeof globalThis.fetch,
      maxResponseBytes: number,
      extra: Partial<ConstructorParameters<typeof HttpUpstream>[0]> = {},
    ) =>
      new HttpUpstream({
        baseUrl: 'http://upstream.test/v1',
        apiKey: 'sk-secret',
        concurrency: 4,
        timeoutMs: 1_000,
        maxAttempts: 3,
        clock: fakeClock().clock,
        fetch,
        maxResponseBytes,
        ...extra,
      });

    it('makes an answer over MAX_RESPONSE_BYTES the error response_too_large, once, with no body, by Content-Length or by counting', async () => {
      for (const answer of [json(200, { data: 'x'.repeat(5_000) }), streamed(200, big(5_000), 512)]) {
        const { fetch, calls } = scriptedFetch([answer]);
        const result = await limited(fetch, 1_000).send(request, { deadlineMs: Infinity, mayStart: () => true });
        expect(result).toEqual({
          kind: 'error',
          code: 'response_too_large',
          message: 'The upstream answered HTTP 200 with more than 1000 bytes (MAX_RESPONSE_BYTES); the answer was not kept.',
        });
        expect(calls).toHaveLength(1); // the same answer would come again: never retried
      }
      const { fetch } = scriptedFetch([streamed(200, big(900), 100)]);
      expect(await limited(fetch, 1_000).send(request, { deadlineMs: Infinity, mayStart: () => true })).toMatchObject({ statusCode: 200 });
    });

    it('reads an answer that will be retried only up to its first 64 KiB', async () => {
      const { fetch, calls } = scriptedFetch([streamed(503, big(5 * RETRIED_ANSWER_BYTES)), json(200, { ok: true })]);
      const budget = new ResponseBudget(10_000_000);
      const lease = budget.lease();
      const result = await limited(fetch, 10_000_000).send(request, { deadlineMs: Infinity, mayStart: () => true, lease });
      expect(result).toMatchObject({ statusCode: 200, body: { ok: true } });
      expect(calls).toHaveLength(2);
      // Only the final answer is held, until the caller lets go of it.
      expect(lease.bytes).toBe(JSON.stringify({ ok: true }).length);
      lease.release();
      expect(budget.usedBytes).toBe(0);

      const last = await limited(scriptedFetch([streamed(500, big(5 * RETRIED_ANSWER_BYTES))]).fetch, 10_000_000, { maxAttempts: 1 }).send(
        request,
        {
          deadlineMs: Infinity,
          mayStart: () => true,
        },
      );
      expect(last).toMatchObject({ statusCode: 500, body: { error: { type: 'upstream_error' } } });
      expect(JSON.stringify(last).length).toBeLessThan(4_000);
    });

    it('starts no request while the in-flight budget is spent, and starts it once answers are let go of', async () => {
      const { fetch, calls } = scriptedFetch([json(200, { ok: 1 }), json(200, { ok: 2 })]);
      const client = limited(fetch, 1_000);
      const budget = new ResponseBudget(5);
      const first = budget.lease();
      await client.send(request, { deadlineMs: Infinity, mayStart: () => true, lease: first });
      expect(budget.usedBytes).toBeGreaterThanOrEqual(5);
      const second = client.send(request, { deadlineMs: Infinity, mayStart: () => true, lease: budget.lease() });
      await new Promise((resolve) => setTimeout(resolve, 10));
      expect(calls).toHaveLength(1);
      first.release();
      expect(await second).toMatchObject({ body: { ok: 2 } });
      expect(calls).toHaveLength(2);
    });

    it('redacts every configured key from answers, JSON or not, before they are parsed', async () => {
      const redactor = keyRedactor(['sk-secret', 'sk-other-route']);
      const { fetch } = scriptedFetch([
        json(401, { error: { message: 'Bad header: Bearer sk-secret (also saw sk-other-route)' } }, { 'x-request-id': 'id-sk-secret' }),
        () =>
          new Response('<html><pre>authorization: Bearer sk-secret</pre></html>', {
            status: 403,
            headers: { 'content-type': 'text/html' },
          }),
      ]);
      const client = limited(fetch, 1_000_000, { redactor });
      const jsonAnswer = await client.send(request, { deadlineMs: Infinity, mayStart: () => true });
      const htmlAnswer = await client.send(request, { deadlineMs: Infinity, mayStart: () => true });
      expect(jsonAnswer).toMatchObject({
        statusCode: 401,
        requestId: 'id-[redacted]',
        body: { error: { message: 'Bad header: Bearer [redacted] (also saw [redacted])' } },
      });
      expect(htmlAnswer).toMatchObject({
        statusCode: 403,
        body: { error: { message: '<html><pre>authorization: Bearer [redacted]</pre></html>' } },
      });
    });

    it('reads huge answers off a real socket (undici) within the limit, and goes on using the route after one was cut', async () => {
      const sim = await startUpstreamSim({ answerBytes: ({ key }) => (key === 'huge' ? 4_000_000 : 200_000) });
      try {
        const client = new HttpUpstream({
          baseUrl: sim.baseURL,
          apiKey: undefined,
          concurrency: 2,
          timeoutMs: 5_000,
          maxAttempts: 1,
          clock: systemClock,
          maxResponseBytes: 1_000_000,
        });
        const send = (content: string) =>
          client.send(
            { url: '/v1/chat/completions', body: { model: 'm', messages: [{ role: 'user', content }] } },
            { deadlineMs: Infinity, mayStart: () => true },
          );
        expect(await send('huge')).toMatchObject({ kind: 'error', code: 'response_too_large' });
        const fine = await send('fine');
        expect(fine).toMatchObject({ kind: 'response', statusCode: 200, body: { choices: [{ message: { content: 'echo: fine' } }] } });
      } finally {
        await sim.close();
      }
    });
  });
});
