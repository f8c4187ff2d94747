// The seed's walk-through: ten product reviews, uploaded, batched, polled and downloaded with the
// official openai SDK, against a simulated upstream.

import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, collectResults, upload, waitForBatch, writeJsonl } from '../support/e2e.js';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';

const REVIEWS = fileURLToPath(new URL('../fixtures/product_reviews.jsonl', import.meta.url));

const BATCH_FIELDS = [
  'id',
  'object',
  'endpoint',
  'model',
  'errors',
  'input_file_id',
  'completion_window',
  'status',
  'output_file_id',
  'error_file_id',
  'created_at',
  'in_progress_at',
  'expires_at',
  'finalizing_at',
  'completed_at',
  'failed_at',
  'expired_at',
  'cancelling_at',
  'cancelled_at',
  'request_counts',
  'usage',
  'metadata',
];

describe('the product-review walk-through', () => {
  let upstream: UpstreamSim;
  let service: ServiceProcess;

  beforeAll(async () => {
    upstream = await startUpstreamSim({ latencyMs: 20, requireApiKey: 'upstream-secret' });
    service = await startServiceProcess({ env: { UPSTREAM_BASE_URL: upstream.baseURL, UPSTREAM_API_KEY: 'upstream-secret' } });
  });
  afterAll(async () => {
    await service?.removeDataDir();
    await upstream?.close();
  });

  it('runs the ten reviews end to end with the openai SDK', async () => {
    const openai = client(service.baseURL);
    const input = await upload(openai, REVIEWS);
    expect(input).toMatchObject({ object: 'file', purpose: 'batch', filename: 'product_reviews.jsonl', status: 'processed' });

    const created = await openai.batches.create({
      input_file_id: input.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
      metadata: { description: 'product reviews' },
    });
    expect(Object.keys(created).sort()).toEqual([...BATCH_FIELDS].sort());
    expect(created).toMatchObject({
      object: 'batch',
      status: 'validating',
      input_file_id: input.id,
      output_file_id: null,
      completed_at: null,
      request_counts: { total: 0, completed: 0, failed: 0 },
      metadata: { description: 'product reviews' },
    });
    expect(created.expires_at! - created.created_at).toBe(24 * 3600);

    const batch = await waitForBatch(openai, created.id);
    expect(batch.status).toBe('completed');
    expect(batch.model).toBe('glm-4');
    expect(batch.request_counts).toEqual({ total: 10, completed: 10, failed: 0 });
    expect(batch.error_file_id).toBeNull();
    for (const field of ['in_progress_at', 'finalizing_at', 'completed_at'] as const)
      expect(batch[field]).toBeGreaterThanOrEqual(batch.created_at);

    const { output, errors, ids, duplicates } = await collectResults(openai, batch);
    expect(errors).toEqual([]);
    expect(duplicates).toEqual([]);
    expect([...ids].sort()).toEqual(Array.from({ length: 10 }, (_, i) => `request-${i + 1}`).sort());
    for (const line of output) {
      expect(line.id).toMatch(/^batch_req_/);
      expect(line.error).toBeNull();
      expect(line.response).toMatchObject({ status_code: 200, body: { object: 'chat.completion', model: 'glm-4' } });
      expect(line.response!.request_id).toBeTruthy();
    }
    const usage = output.reduce(
      (sum, line) => ({
        input: sum.input + line.response!.body.usage.prompt_tokens,
        output: sum.output + line.response!.body.usage.completion_tokens,
      }),
      { input: 0, output: 0 },
    );
    expect(batch.usage).toMatchObject({ input_tokens: usage.input, output_tokens: usage.output, total_tokens: usage.input + usage.output });
    expect(upstream.stats().requests).toBe(10);

    const outputFile = await openai.files.retrieve(batch.output_file_id!);
    expect(outputFile).toMatchObject({ purpose: 'batch_output', object: 'file' });
  });

  it('answers the same routes under /v4 for Zhipu-style clients', async () => {
    const zhipu = client(service.baseURL.replace(/\/v1$/, '/v4'));
    const input = await upload(zhipu, REVIEWS);
    const created = await zhipu.batches.create({
      input_file_id: input.id,
      endpoint: '/v4/chat/completions' as '/v1/chat/completions',
      completion_window: '24h',
    });
    const batch = await waitForBatch(zhipu, created.id);
    expect(batch).toMatchObject({
      status: 'completed',
      endpoint: '/v4/chat/completions',
      request_counts: { total: 10, completed: 10, failed: 0 },
    });
  });

  it('runs batch-test-model in-process without calling the upstream', async () => {
    const openai = client(service.baseURL);
    const before = upstream.stats().requests;
    for (const endpoint of ['/v1/chat/completions', '/v1/embeddings', '/v1/completions', '/v1/responses']) {
      const body = endpoint === '/v1/chat/completions' ? { messages: [{ role: 'user', content: 'hi' }] } : { input: 'hi', prompt: 'hi' };
      const file = await upload(
        openai,
        await writeJsonl([{ custom_id: 'dry-1', method: 'POST', url: endpoint, body: { model: 'batch-test-model', ...body } }]),
      );
      const created = await openai.batches.create({
        input_file_id: file.id,
        endpoint: endpoint as '/v1/chat/completions',
        completion_window: '24h',
      });
      const batch = await waitForBatch(openai, created.id);
      expect(batch, endpoint).toMatchObject({ status: 'completed', request_counts: { total: 1, completed: 1, failed: 0 } });
    }
    expect(upstream.stats().requests).toBe(before);
  });
});
