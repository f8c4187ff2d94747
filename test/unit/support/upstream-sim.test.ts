import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { startUpstreamSim, type UpstreamSim } from '../../support/upstream-sim.js';

let sim: UpstreamSim | undefined;
afterEach(async () => {
  await sim?.close();
  sim = undefined;
});

function chat(baseURL: string, content: string, init: { apiKey?: string; signal?: AbortSignal } = {}) {
  return fetch(`${baseURL}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${init.apiKey ?? 'test'}` },
    body: JSON.stringify({ model: 'sim-model', messages: [{ role: 'user', content }] }),
    ...(init.signal ? { signal: init.signal } : {}),
  });
}

describe('upstream sim', () => {
  it('answers a realistic chat completion the official SDK accepts', async () => {
    sim = await startUpstreamSim();
    const client = new OpenAI({ baseURL: sim.baseURL, apiKey: 'test', maxRetries: 0 });
    const completion = await client.chat.completions.create({
      model: 'my-model',
      messages: [{ role: 'user', content: 'hello there' }],
    });
    expect(completion.id).toMatch(/^chatcmpl-/);
    expect(completion.object).toBe('chat.completion');
    expect(completion.model).toBe('my-model');
    expect(completion.choices[0]?.message).toMatchObject({ role: 'assistant', content: 'echo: hello there' });
    expect(completion.choices[0]?.finish_reason).toBe('stop');
    const usage = completion.usage!;
    expect(usage.total_tokens).toBe(usage.prompt_tokens + usage.completion_tokens);

    const again = await client.chat.completions.create({ model: 'my-model', messages: [{ role: 'user', content: 'hello there' }] });
    expect(again.usage).toEqual(usage);
    expect(sim.stats().callsByCustomKey.get('hello there')).toBe(2);
    expect(sim.stats().byStatus).toEqual({ '200': 2 });
  });

  it('serves embeddings, completions and responses, also under /v4, and 404s unknown paths', async () => {
    sim = await startUpstreamSim();
    const client = new OpenAI({ baseURL: sim.baseURL, apiKey: 'test', maxRetries: 0 });
    const embeddings = await client.embeddings.create({ model: 'e', input: ['a', 'b'] });
    expect(embeddings.data).toHaveLength(2);
    expect(embeddings.data[0]?.embedding).toHaveLength(8);
    const again = await client.embeddings.create({ model: 'e', input: 'a' });
    expect(again.data[0]?.embedding).toEqual(embeddings.data[0]?.embedding);

    const completion = await client.completions.create({ model: 'c', prompt: 'say hi' });
    expect(completion.choices[0]?.text).toBe('echo: say hi');

    const response = await client.responses.create({ model: 'r', input: 'question' });
    expect(response.output_text).toBe('echo: question');
    expect(response.usage?.total_tokens).toBe((response.usage?.input_tokens ?? 0) + (response.usage?.output_tokens ?? 0));

    const v4 = await fetch(`${sim.origin}/v4/chat/completions`, {
      method: 'POST',
      body: JSON.stringify({ model: 'glm', messages: [{ role: 'user', content: 'zhipu' }] }),
    });
    expect(v4.status).toBe(200);
    expect(v4.headers.get('x-request-id')).toMatch(/^req_/);

    const missing = await fetch(`${sim.origin}/v1/nope`, { method: 'POST', body: '{}' });
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ error: { code: 'unknown_url' } });
  });

  it('waits latencyMs before answering', async () => {
    sim = await startUpstreamSim({ latencyMs: 150 });
    const started = performance.now();
    const response = await chat(sim.baseURL, 'slow');
    await response.text();
    expect(performance.now() - started).toBeGreaterThanOrEqual(140);
  });

  it('tracks the peak in flight and caps it with maxConcurrency', async () => {
    sim = await startUpstreamSim({ latencyMs: 100 });
    await Promise.all(Array.from({ length: 5 }, (_, i) => chat(sim!.baseURL, `q${i}`).then((r) => r.text())));
    expect(sim.stats().peakInFlight).toBe(5);
    expect(sim.stats().inFlight).toBe(0);

    sim.reset();
    sim.configure({ maxConcurrency: 3 });
    const responses = await Promise.all(Array.from({ length: 5 }, (_, i) => chat(sim!.baseURL, `q${i}`)));
    const statuses = responses.map((r) => r.status).sort();
    expect(statuses).toEqual([200, 200, 200, 429, 429]);
    expect(responses.find((r) => r.status === 429)?.headers.get('retry-after')).toBe('1');
    expect(sim.stats().byStatus).toEqual({ '200': 3, '429': 2 });
  });

  it('answers 429 with retry-after-ms by default, or Retry-After seconds when configured', async () => {
    sim = await startUpstreamSim({ rateLimitRate: 1 });
    const first = await chat(sim.baseURL, 'limited');
    expect(first.status).toBe(429);
    expect(first.headers.get('retry-after-ms')).toBe('50');
    expect(await first.json()).toMatchObject({ error: { code: 'rate_limit_exceeded' } });

    sim.configure({ retryAfterSeconds: 2 });
    const second = await chat(sim.baseURL, 'limited');
    expect(second.status).toBe(429);
    expect(second.headers.get('retry-after')).toBe('2');
  });

  it('fails chosen requests deterministically with failWhen', async () => {
    sim = await startUpstreamSim({
      failWhen: (body) =>
        JSON.stringify(body.messages).includes('FAIL')
          ? { status: 400, body: { error: { message: 'bad', type: 'invalid_request_error', param: null, code: 'bad' } } }
          : undefined,
    });
    expect((await chat(sim.baseURL, 'fine')).status).toBe(200);
    const failed = await chat(sim.baseURL, 'please FAIL');
    expect(failed.status).toBe(400);
    expect(await failed.json()).toMatchObject({ error: { code: 'bad' } });
  });

  it('answers 401 with the error envelope when requireApiKey does not match', async () => {
    sim = await startUpstreamSim({ requireApiKey: 'sk-right' });
    const wrong = await chat(sim.baseURL, 'x', { apiKey: 'sk-wrong' });
    expect(wrong.status).toBe(401);
    expect(await wrong.json()).toMatchObject({ error: { type: 'invalid_request_error', code: 'invalid_api_key' } });
    expect((await chat(sim.baseURL, 'x', { apiKey: 'sk-right' })).status).toBe(200);
  });

  it('draws the same faults for the same seed', async () => {
    const outcomes = async (seed: number) => {
      sim?.configure({ seed });
      const seen: string[] = [];
      for (let i = 0; i < 40; i++) {
        try {
          const response = await chat(sim!.baseURL, `r${i}`);
          await response.text();
          seen.push(String(response.status));
        } catch {
          seen.push('reset');
        }
      }
      return seen;
    };
    sim = await startUpstreamSim({ failRate: 0.3, rateLimitRate: 0.2, resetRate: 0.1 });
    const a = await outcomes(42);
    const b = await outcomes(42);
    const c = await outcomes(7);
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
    expect(new Set(a)).toEqual(new Set(['200', '500', '429', 'reset']));
  });

  it('holds hung requests until the client gives up, and close() frees them', async () => {
    sim = await startUpstreamSim({ hangRate: 1 });
    await expect(chat(sim.baseURL, 'hang', { signal: AbortSignal.timeout(100) })).rejects.toThrow();
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(sim.stats().inFlight).toBe(0);
    expect(sim.stats().byStatus).toEqual({ hang: 1 });

    const pending = chat(sim.baseURL, 'hang again');
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(sim.stats().inFlight).toBe(1);
    await sim.close();
    sim = undefined;
    await expect(pending).rejects.toThrow();
  });

  it('pads answers to a huge size, for every request or per request, still a valid answer', async () => {
    sim = await startUpstreamSim({ answerBytes: ({ key }) => (key === 'big' ? 3_000_000 : undefined) });
    const big = await chat(sim.baseURL, 'big');
    expect(Number(big.headers.get('content-length'))).toBeGreaterThanOrEqual(2_999_000);
    const text = await big.text();
    expect(Buffer.byteLength(text)).toBeGreaterThanOrEqual(2_999_000);
    const body = JSON.parse(text);
    expect(body.choices[0].message.content).toBe('echo: big');
    expect(body.sim_padding).toMatch(/^x+$/);
    const small = await (await chat(sim.baseURL, 'small')).json();
    expect(small.sim_padding).toBeUndefined();

    sim.configure({ answerBytes: 100_000 });
    const client = new OpenAI({ baseURL: sim.baseURL, apiKey: 'test', maxRetries: 0 });
    const embeddings = await client.embeddings.create({ model: 'e', input: 'a', encoding_format: 'float' });
    expect(embeddings.data[0]?.embedding).toHaveLength(8);
  });

  it('echoes the request headers, Authorization included, in a JSON error or an HTML page', async () => {
    sim = await startUpstreamSim({ echoHeaders: { format: 'json' } });
    const json = await chat(sim.baseURL, 'x', { apiKey: 'sk-echo-me' });
    expect(json.status).toBe(400);
    const envelope = await json.json();
    expect(envelope.error.message).toContain('Bearer sk-echo-me');

    sim.configure({ echoHeaders: { format: 'html', status: 502 } });
    const html = await chat(sim.baseURL, 'x', { apiKey: 'sk-echo-me' });
    expect(html.status).toBe(502);
    expect(html.headers.get('content-type')).toMatch(/^text\/html/);
    expect(await html.text()).toContain('authorization: Bearer sk-echo-me');
  });
});
