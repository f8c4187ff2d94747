// How a batch ends when things go wrong: upstream failures, an invalid file, a cancel, an expiry.
// Whatever happens, every custom_id appears exactly once across the output and error files.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLine, chatLines, client, collectResults, submit, waitForBatch } from '../support/e2e.js';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';

describe('batch outcomes', () => {
  let upstream: UpstreamSim;
  let service: ServiceProcess;

  beforeAll(async () => {
    upstream = await startUpstreamSim({ latencyMs: 5 });
    service = await startServiceProcess({
      env: {
        UPSTREAM_BASE_URL: upstream.baseURL,
        UPSTREAM_CONCURRENCY: '4',
        UPSTREAM_BACKOFF_BASE: '10ms',
        UPSTREAM_MAX_ATTEMPTS: '3',
        UPSTREAM_TIMEOUT: '2s',
        MIN_COMPLETION_WINDOW: '3s',
        CHUNK_MAX_REQUESTS: '10',
      },
    });
  });
  afterAll(async () => {
    await service?.removeDataDir();
    await upstream?.close();
  });

  it('puts answered requests in the output file and failed ones in the error file', async () => {
    upstream.configure({
      latencyMs: 5,
      failWhen: (_body, { key }) => {
        if (key.includes('REJECT'))
          return { status: 400, body: { error: { message: 'bad prompt', type: 'invalid_request_error', param: 'messages', code: null } } };
        if (key.includes('BROKEN'))
          return { status: 503, body: { error: { message: 'overloaded', type: 'server_error', param: null, code: null } } };
        return undefined;
      },
    });
    upstream.reset();
    const openai = client(service.baseURL);
    const lines = [
      ...chatLines(40),
      chatLine('rejected-1', 'please REJECT this'),
      chatLine('rejected-2', 'REJECT again'),
      chatLine('broken-1', 'this one is BROKEN'),
    ];
    const created = await submit(openai, lines);
    const batch = await waitForBatch(openai, created.id);
    upstream.configure({ failWhen: undefined });

    expect(batch.status).toBe('completed');
    expect(batch.request_counts).toEqual({ total: 43, completed: 40, failed: 3 });
    const { output, errors, ids, duplicates } = await collectResults(openai, batch);
    expect(duplicates).toEqual([]);
    expect(ids.size).toBe(43);
    expect(output).toHaveLength(40);
    const byId = Object.fromEntries(errors.map((line) => [line.custom_id, line]));
    // A 4xx other than 429 is final at once, and lands with the upstream's own body.
    expect(byId['rejected-1']).toMatchObject({ error: null, response: { status_code: 400, body: { error: { message: 'bad prompt' } } } });
    // A 5xx is retried up to UPSTREAM_MAX_ATTEMPTS, then lands with the last answer.
    expect(byId['broken-1']).toMatchObject({ error: null, response: { status_code: 503 } });
    expect(upstream.stats().callsByCustomKey.get('please REJECT this')).toBe(1);
    expect(upstream.stats().callsByCustomKey.get('this one is BROKEN')).toBe(3);
  });

  it('fails an invalid file with every bad line numbered, and sends nothing upstream', async () => {
    upstream.reset();
    const openai = client(service.baseURL);
    const lines = [
      chatLine('a', 'fine'),
      '{"custom_id": "b", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "sim-model"',
      chatLine('a', 'duplicate id'),
      { ...chatLine('c', 'wrong url'), url: '/v1/embeddings' },
      { ...chatLine('d', 'wrong model'), body: { model: 'other-model', messages: [] } },
      { custom_id: 'e', method: 'GET', url: '/v1/chat/completions', body: { model: 'sim-model' } },
      { method: 'POST', url: '/v1/chat/completions', body: { model: 'sim-model' } },
    ];
    const created = await submit(openai, lines);
    const batch = await waitForBatch(openai, created.id);
    expect(batch.status).toBe('failed');
    expect(batch.failed_at).toBeGreaterThan(0);
    expect(batch.output_file_id).toBeNull();
    const errors = batch.errors!.data!.map(({ line, code }) => ({ line, code }));
    expect(errors).toEqual([
      { line: 2, code: 'invalid_json_line' },
      { line: 3, code: 'duplicate_custom_id' },
      { line: 4, code: 'url_mismatch' },
      { line: 5, code: 'model_mismatch' },
      { line: 6, code: 'invalid_method' },
      { line: 7, code: 'missing_custom_id' },
    ]);
    expect(batch.errors!.object).toBe('list');
    for (const error of batch.errors!.data!) expect(error.message).toMatch(/\S/);
    expect(upstream.stats().requests).toBe(0);
  });

  it('refuses a file with no requests at upload, before any batch exists', async () => {
    const openai = client(service.baseURL);
    // Validation would fail it with empty_file too (test/unit/validate.test.ts); the upload check answers first.
    await expect(submit(openai, ['', '   '])).rejects.toMatchObject({ status: 400, error: { code: 'empty_file', param: 'file' } });
  });

  it('cancels mid-run: in-flight requests finish, the rest are batch_cancelled', async () => {
    upstream.configure({ latencyMs: 150 });
    upstream.reset();
    const openai = client(service.baseURL);
    const created = await submit(openai, chatLines(120, { prefix: 'cancel me' }));
    await waitForBatch(openai, created.id, (b) => b.request_counts!.completed >= 10);

    const cancelling = await openai.batches.cancel(created.id);
    expect(cancelling.status).toBe('cancelling');
    expect(cancelling.cancelling_at).toBeGreaterThan(0);

    const batch = await waitForBatch(openai, created.id);
    expect(batch.status).toBe('cancelled');
    expect(batch.cancelled_at).toBeGreaterThanOrEqual(batch.cancelling_at!);
    const { output, errors, ids, duplicates } = await collectResults(openai, batch);
    expect(duplicates).toEqual([]);
    expect(ids.size).toBe(120);
    expect(output.length).toBeGreaterThanOrEqual(10);
    expect(output.length).toBe(upstream.stats().byStatus['200'] ?? 0);
    const cancelled = errors.filter((line) => line.error?.code === 'batch_cancelled');
    expect(cancelled.length).toBe(120 - output.length);
    expect(cancelled.length).toBeGreaterThan(0);
    expect(batch.request_counts).toEqual({ total: 120, completed: output.length, failed: errors.length });

    // Cancelling again is harmless; cancelling a finished batch is a conflict.
    expect((await openai.batches.cancel(created.id)).status).toBe('cancelled');
    upstream.configure({ latencyMs: 5 });
    const done = await waitForBatch(openai, (await submit(openai, chatLines(2))).id);
    await expect(openai.batches.cancel(done.id)).rejects.toMatchObject({ status: 409, error: { code: 'batch_not_cancellable' } });
  });

  it('expires when the window passes: finished lines kept, the rest batch_expired', async () => {
    upstream.configure({ latencyMs: 200 });
    upstream.reset();
    const openai = client(service.baseURL);
    // 4 in flight at 200 ms is 20 requests a second: 100 requests need 5 s, the window is 3 s.
    const created = await submit(openai, chatLines(100, { prefix: 'slow' }), { window: '3s' });
    expect(created.expires_at! - created.created_at).toBe(3);
    const batch = await waitForBatch(openai, created.id);
    upstream.configure({ latencyMs: 5 });

    expect(batch.status).toBe('expired');
    expect(batch.expired_at).toBeGreaterThanOrEqual(batch.expires_at!);
    const { output, errors, ids, duplicates } = await collectResults(openai, batch);
    expect(duplicates).toEqual([]);
    expect(ids.size).toBe(100);
    expect(output.length).toBeGreaterThan(0);
    const expired = errors.filter((line) => line.error?.code === 'batch_expired');
    expect(expired.length).toBe(100 - output.length);
    expect(expired[0]!.response).toBeNull();
    expect(batch.request_counts).toEqual({ total: 100, completed: output.length, failed: 100 - output.length });
  });
});
