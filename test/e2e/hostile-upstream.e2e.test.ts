// A misbehaving upstream against `npm start`, driven by the official openai SDK: answers of many
// megabytes (the batch completes within the in-flight budget, an answer over MAX_RESPONSE_BYTES is
// that line's error), an upstream that echoes its request headers (no configured key reaches an
// error file or a log line), and a chunk that fails on every delivery (given up: the batch ends
// failed instead of waiting or looping). Every custom_id lands once, and the service goes on.
import { unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLine, chatLines, client, collectResults, submit, upload, waitForBatch, writeJsonl } from '../support/e2e.js';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';

const MB = 1024 * 1024;
const DEFAULT_KEY = 'sk-default-e2e-0123456789abcdef';
const ROUTE_KEY = 'sk-route-e2e-fedcba9876543210';

async function healthy(service: ServiceProcess) {
  expect((await fetch(`${service.origin}/healthz`)).status).toBe(200);
}

describe('a hostile upstream', () => {
  let upstream: UpstreamSim;
  let service: ServiceProcess;

  beforeAll(async () => {
    upstream = await startUpstreamSim({ latencyMs: 5 });
    const routes = path.join(await writeJsonl([]).then(path.dirname), 'routes.json');
    await writeFile(routes, JSON.stringify({ 'routed-*': { baseUrl: upstream.baseURL, apiKeySecret: 'env:E2E_ROUTE_KEY' } }));
    service = await startServiceProcess({
      env: {
        UPSTREAM_BASE_URL: upstream.baseURL,
        UPSTREAM_API_KEY: DEFAULT_KEY,
        UPSTREAM_ROUTES: routes,
        E2E_ROUTE_KEY: ROUTE_KEY,
        UPSTREAM_CONCURRENCY: '8',
        UPSTREAM_MAX_ATTEMPTS: '2',
        UPSTREAM_BACKOFF_BASE: '10ms',
        MAX_RESPONSE_BYTES: String(2 * MB),
        MAX_INFLIGHT_RESPONSE_BYTES: String(4 * MB),
        CHUNK_MAX_REQUESTS: '8',
        // One chunk at a time: the last test takes the input away while later chunks still wait.
        LOCAL_WORKERS: '1',
      },
    });
  });
  afterAll(async () => {
    await service?.removeDataDir();
    await upstream?.close();
  });

  it('completes a batch of answers of megabytes each, and makes one over MAX_RESPONSE_BYTES that line response_too_large', async () => {
    upstream.reset();
    // 12 answers of 1.5 MB through a budget of 4 MB; one answer of 3 MB, over MAX_RESPONSE_BYTES.
    upstream.configure({ answerBytes: ({ key }) => (key === 'question 7' ? 3 * MB : 1.5 * MB) });
    try {
      const openai = client(service.baseURL);
      const created = await submit(openai, chatLines(12));
      const batch = await waitForBatch(openai, created.id);
      expect(batch.status).toBe('completed');
      expect(batch.request_counts).toEqual({ total: 12, completed: 11, failed: 1 });
      const { output, errors, ids, duplicates } = await collectResults(openai, batch);
      expect(duplicates).toEqual([]);
      expect(ids.size).toBe(12);
      expect(output).toHaveLength(11);
      for (const line of output) expect(line.response!.body.sim_padding.length).toBeGreaterThan(1.5 * MB - 2_000);
      expect(errors).toMatchObject([
        {
          custom_id: 'req-7',
          response: null,
          error: { code: 'response_too_large', message: expect.stringMatching(/HTTP 200 with more than 2097152 bytes/) },
        },
      ]);
      // Nothing was asked twice: a too-large answer is not retried, and no chunk was redelivered.
      expect([...upstream.stats().callsByCustomKey.values()].every((calls) => calls === 1)).toBe(true);
      expect(upstream.stats().requests).toBe(12);
    } finally {
      upstream.configure({ answerBytes: undefined });
    }
    await healthy(service);
  });

  it.each([
    ['a JSON error', { format: 'json', status: 400 }, 'sim-model'],
    ['an HTML page, retried', { format: 'html', status: 502 }, 'routed-model'],
  ] as const)('keeps every upstream key out of error files and logs when the upstream echoes them in %s', async (_what, echo, model) => {
    upstream.reset();
    upstream.configure({ echoHeaders: echo });
    try {
      const openai = client(service.baseURL);
      const created = await submit(openai, [chatLine('echo-1', 'one', model), chatLine('echo-2', 'two', model)]);
      const batch = await waitForBatch(openai, created.id);
      expect(batch.request_counts).toEqual({ total: 2, completed: 0, failed: 2 });
      // The upstream did see the key (it echoes it): it was sent, then redacted from the answer.
      expect(upstream.stats().requests).toBe(echo.status === 502 ? 4 : 2); // a 502 is tried UPSTREAM_MAX_ATTEMPTS times
      const text = await (await openai.files.content(batch.error_file_id!)).text();
      expect(text).toContain('Bearer [redacted]');
      for (const secret of [DEFAULT_KEY, ROUTE_KEY]) {
        expect(text).not.toContain(secret);
        expect(service.logs()).not.toContain(secret);
      }
      const lines = text
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line));
      expect(lines.map((line) => [line.custom_id, line.response.status_code])).toEqual(
        expect.arrayContaining([
          ['echo-1', echo.status],
          ['echo-2', echo.status],
        ]),
      );
    } finally {
      upstream.configure({ echoHeaders: undefined });
    }
    await healthy(service);
  });

  it('gives up a chunk that fails on every delivery: the batch ends failed with the reason, never redelivered for ever', async () => {
    upstream.reset();
    upstream.configure({ latencyMs: 1_000 });
    try {
      const openai = client(service.baseURL);
      const input = await upload(openai, await writeJsonl(chatLines(16, { prefix: 'lost input' })));
      const created = await openai.batches.create({ input_file_id: input.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
      await waitForBatch(openai, created.id, (batch) => batch.status !== 'validating');
      // The input's bytes vanish under the running batch: the chunks that have not read them yet never can.
      await unlink(path.join(service.dataDir, 'blobs', 'files', input.id));
      const batch = await waitForBatch(openai, created.id, undefined, 45_000);
      expect(batch.status).toBe('failed');
      expect(batch.errors?.data?.map((entry) => entry.code)).toContain('chunk_failed');
      const counts = batch.request_counts!;
      expect(counts.total).toBe(16);
      expect(counts.completed + counts.failed).toBe(16);
      const { duplicates } = await collectResults(openai, batch);
      expect(duplicates).toEqual([]);
      expect(service.logs()).toContain('chunk given up');
    } finally {
      upstream.configure({ latencyMs: 5 });
    }
    await healthy(service);
  });
});
