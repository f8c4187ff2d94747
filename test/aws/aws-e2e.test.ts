// The AWS runtime end to end, in-process: the real Lambda handlers (functions/) over the AWS
// adapters (DynamoDB on dynalite, S3 on s3rver), the state machine and SQS stand-ins of
// test/support/aws-harness.ts, and the official openai SDK whose every request reaches the API
// handler as an API Gateway HTTP API event.

import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type OpenAI from 'openai';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { logger, metrics } from '../../functions/observability.js';
import { ZERO_USAGE } from '../../shared/batch/model.js';
import { advance } from '../../shared/batch/transitions.js';
import { batchRecord } from '../adapters/meta-store-contract.js';
import { AwsHarness } from '../support/aws-harness.js';
import { chatLines, collectResults, submit, upload, waitForBatch, writeJsonl } from '../support/e2e.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';

const REVIEWS = fileURLToPath(new URL('../fixtures/product_reviews.jsonl', import.meta.url));
const UPSTREAM_SECRET_ARN = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:upstream-key-AbCdEf';

const CANCEL_DRAINED = [
  'Validate',
  'AfterValidate',
  'Enqueue',
  'WaitForChunks',
  'BatchCancelled',
  'DrainAfterCancel',
  'TaskSuccess',
  'Finalize',
];

async function until(condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`not true after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function quiet() {
  process.env.POWERTOOLS_METRICS_DISABLED = 'true';
  logger().setLogLevel('SILENT');
}

describe('the AWS runtime, in-process', () => {
  let upstream: UpstreamSim;
  let aws: AwsHarness;
  let openai: OpenAI;

  beforeAll(async () => {
    quiet();
    upstream = await startUpstreamSim({ latencyMs: 10, requireApiKey: 'upstream-secret' });
    aws = await AwsHarness.start({
      env: {
        UPSTREAM_CONFIG: JSON.stringify({ default: { baseUrl: upstream.baseURL, apiKeySecret: UPSTREAM_SECRET_ARN }, routes: {} }),
        UPSTREAM_BACKOFF_BASE: '10ms',
        UPSTREAM_TIMEOUT: '3s',
        CHUNK_MAX_REQUESTS: '4',
        MIN_COMPLETION_WINDOW: '1s',
      },
      secrets: { [UPSTREAM_SECRET_ARN]: JSON.stringify({ apiKey: 'upstream-secret' }) },
      visibilityTimeoutMs: 1_000,
    });
    openai = aws.openai(await aws.createKey('team-a'));
  });
  afterAll(async () => {
    await aws?.close();
    await upstream?.close();
  });
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('runs the product-review walk-through with the openai SDK, unchanged', async () => {
    const input = await upload(openai, REVIEWS);
    expect(input).toMatchObject({ object: 'file', purpose: 'batch', filename: 'product_reviews.jsonl' });
    const created = await openai.batches.create({
      input_file_id: input.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
      metadata: { description: 'product reviews' },
    });
    expect(created).toMatchObject({ status: 'validating', request_counts: { total: 0, completed: 0, failed: 0 } });

    const batch = await waitForBatch(openai, created.id);
    expect(batch).toMatchObject({
      status: 'completed',
      model: 'glm-4',
      request_counts: { total: 10, completed: 10, failed: 0 },
      error_file_id: null,
    });
    const { output, errors, ids, duplicates } = await collectResults(openai, batch);
    expect(errors).toEqual([]);
    expect(duplicates).toEqual([]);
    expect([...ids].sort()).toEqual(Array.from({ length: 10 }, (_, i) => `request-${i + 1}`).sort());
    for (const line of output)
      expect(line.response).toMatchObject({ status_code: 200, body: { object: 'chat.completion', model: 'glm-4' } });
    // The upstream key came from Secrets Manager (the sim answers 401 to any other).
    expect(aws.awsCalls.get('SecretsManager.GetSecretValue')).toBe(1);

    // The state machine took its happy path: a fixed handful of transitions for 3 chunks.
    expect(aws.sfn.paths.get(created.id)).toEqual(['Validate', 'AfterValidate', 'Enqueue', 'WaitForChunks', 'TaskSuccess', 'Finalize']);
    // Every request came through API Gateway events within Lambda's payload limits.
    expect(aws.apiExchanges.every((exchange) => exchange.status < 500)).toBe(true);
  });

  it('counts a redelivered chunk once, whether the copy runs after or beside the first', async () => {
    // Chunk 0's first acknowledgement is lost (it comes back after the visibility timeout, already
    // recorded), and chunk 1 is delivered to two workers at once.
    const fates = new Map<string, 'lose-ack' | 'duplicate'>();
    const original = aws.sqs.options.onDelivery;
    aws.sqs.options.onDelivery = (message, receiveCount) => {
      if (receiveCount !== 1) return undefined;
      const fate = message.chunk.index === 0 ? 'lose-ack' : message.chunk.index === 1 ? 'duplicate' : undefined;
      if (fate) fates.set(`${message.batchId}/${message.chunk.index}`, fate);
      return fate;
    };
    try {
      const created = await submit(openai, chatLines(12, { prefix: 'redelivered' }));
      const batch = await waitForBatch(openai, created.id);
      await aws.settle();
      expect(batch.request_counts).toEqual({ total: 12, completed: 12, failed: 0 });
      expect(aws.sqs.deliveries.get(`${created.id}/0`)).toBe(2);
      expect(aws.sqs.deliveries.get(`${created.id}/1`)).toBe(1); // plus its concurrent copy
      expect(fates.size).toBe(2);
      const { output, ids, duplicates } = await collectResults(openai, batch);
      expect(duplicates).toEqual([]);
      expect(output).toHaveLength(12);
      expect(ids.size).toBe(12);
      // The discarded copy's objects were deleted, the recorded ones merged and deleted.
      expect(await aws.blobs.list(`batches/${created.id}/chunks/`)).toEqual([]);
      // Usage counts each answer once.
      const usage = output.reduce((sum, line) => sum + line.response!.body.usage.total_tokens, 0);
      expect(batch.usage?.total_tokens).toBe(usage);
    } finally {
      aws.sqs.options.onDelivery = original;
    }
  });

  it('delivers a chunk again after its worker failed, and reports upstream metrics', async () => {
    upstream.configure({
      failWhen: (_body, { key }) =>
        key.includes('throttle-me 1') && !throttled++
          ? { status: 429, body: { error: { message: 'slow down' } }, headers: { 'retry-after-ms': '5' } }
          : undefined,
    });
    let throttled = 0;
    const added = vi.spyOn(metrics(), 'addMetric');
    let failedOnce = false;
    const worker = aws.handlers.worker!;
    aws.handlers.worker = async (event, context) => {
      if (!failedOnce && event.Records[0].body.includes('"index":1')) {
        failedOnce = true;
        throw new Error('the worker crashed');
      }
      return worker(event, context);
    };
    try {
      const created = await submit(openai, chatLines(8, { prefix: 'throttle-me' }));
      const batch = await waitForBatch(openai, created.id);
      expect(batch.request_counts).toEqual({ total: 8, completed: 8, failed: 0 });
      expect(failedOnce).toBe(true);
      expect(aws.sqs.deliveries.get(`${created.id}/1`)).toBe(2);
      const { ids, duplicates } = await collectResults(openai, batch);
      expect(duplicates).toEqual([]);
      expect(ids.size).toBe(8);
    } finally {
      aws.handlers.worker = worker;
      upstream.configure({ failWhen: undefined });
    }
    const byName = (name: string) =>
      added.mock.calls.filter((call) => call[0] === name).reduce((sum, call) => sum + (call[2] as number), 0);
    expect(byName('UpstreamRequests')).toBe(8);
    expect(byName('UpstreamThrottled')).toBe(1);
    expect(byName('UpstreamRetries')).toBe(1);
    expect(byName('UpstreamAttempts')).toBe(9);
    expect(added.mock.calls.filter((call) => call[0] === 'UpstreamLatency')).toHaveLength(9);
  });

  it('cancels: the task fails with the cancel error, the chunks drain, unrun lines are batch_cancelled, each id once', async () => {
    upstream.configure({ latencyMs: 150 });
    try {
      const created = await submit(openai, chatLines(60, { prefix: 'cancel-me' }));
      await waitForBatch(openai, created.id, (b) => b.status === 'in_progress' && (b.request_counts?.completed ?? 0) > 0);
      const cancelling = await openai.batches.cancel(created.id);
      expect(cancelling.status).toBe('cancelling');
      const batch = await waitForBatch(openai, created.id);
      expect(batch.status).toBe('cancelled');
      expect(batch.cancelled_at).toBeGreaterThanOrEqual(batch.cancelling_at!);
      const counts = batch.request_counts!;
      expect(counts.total).toBe(60);
      expect(counts.completed + counts.failed).toBe(60);
      expect(counts.completed).toBeGreaterThan(0);
      expect(counts.completed).toBeLessThan(60);
      const { output, errors, ids, duplicates } = await collectResults(openai, batch);
      expect(duplicates).toEqual([]);
      expect(ids.size).toBe(60);
      expect(output).toHaveLength(counts.completed);
      expect(errors.every((line) => line.error?.code === 'batch_cancelled' && line.response === null)).toBe(true);
      expect(aws.sfn.paths.get(created.id)).toEqual(CANCEL_DRAINED);
      await aws.settle();
    } finally {
      upstream.configure({ latencyMs: 10 });
    }
  });

  it('keeps the bytes of an input file deleted while its batch runs, and deletes them when the batch ends', async () => {
    upstream.configure({ latencyMs: 150 });
    try {
      const file = await upload(openai, await writeJsonl(chatLines(12, { prefix: 'deleted-input' })));
      const created = await openai.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
      await waitForBatch(openai, created.id, (b) => b.status === 'in_progress');
      expect(await openai.files.delete(file.id)).toEqual({ id: file.id, object: 'file', deleted: true });
      await expect(openai.files.retrieve(file.id)).rejects.toMatchObject({ status: 404 });
      expect(await aws.blobs.size(`files/${file.id}`)).toBeGreaterThan(0);

      const batch = await waitForBatch(openai, created.id);
      expect(batch.status).toBe('completed');
      const { output, ids, duplicates } = await collectResults(openai, batch);
      expect(duplicates).toEqual([]);
      expect(ids.size).toBe(12);
      expect(output).toHaveLength(12);
      await aws.settle();
      expect(await aws.blobs.size(`files/${file.id}`)).toBeUndefined();
      await expect(openai.files.delete(file.id)).rejects.toMatchObject({ status: 404 });
    } finally {
      upstream.configure({ latencyMs: 10 });
    }
  });

  it('drains a cancel: requests in flight finish into the output file, those never started are batch_cancelled', async () => {
    upstream.configure({ latencyMs: 1_500 });
    upstream.reset();
    try {
      const created = await submit(openai, chatLines(40, { prefix: 'drain-me' }));
      await until(() => upstream.stats().inFlight > 0);
      expect((await openai.batches.cancel(created.id)).status).toBe('cancelling');
      const batch = await waitForBatch(openai, created.id);
      expect(batch.status).toBe('cancelled');
      const { output, errors, ids, duplicates } = await collectResults(openai, batch);
      expect(duplicates).toEqual([]);
      expect(ids.size).toBe(40);
      // Every request the upstream received was answered and kept; the others never started.
      const started = [...upstream.stats().callsByCustomKey.keys()].map((key) => `req-${key.replace('drain-me ', '')}`);
      expect(output.length).toBeGreaterThan(0);
      expect(output.length).toBeLessThan(40);
      expect(output.map((line) => line.custom_id).sort()).toEqual(started.sort());
      expect(output.every((line) => line.response?.status_code === 200)).toBe(true);
      expect(errors).toHaveLength(40 - output.length);
      expect(errors.every((line) => line.error?.code === 'batch_cancelled' && line.response === null)).toBe(true);
      expect(batch.request_counts).toEqual({ total: 40, completed: output.length, failed: errors.length });
      // The last worker's chunk ended the drain.
      expect(aws.sfn.paths.get(created.id)).toEqual(CANCEL_DRAINED);
      await aws.settle();
    } finally {
      upstream.configure({ latencyMs: 10 });
    }
  });

  it('finalizes a cancelled batch when the drain time passes, with requests still hanging', async () => {
    upstream.configure({ hangRate: 1 });
    upstream.reset();
    aws.sfn.timeoutScale = 0.1; // drainSeconds is 8 (3 s upstream timeout + 5 s): 0.8 s, before any request times out
    try {
      const created = await submit(openai, chatLines(8, { prefix: 'stuck' }));
      await until(() => (upstream.stats().byStatus.hang ?? 0) > 0);
      await openai.batches.cancel(created.id);
      const batch = await waitForBatch(openai, created.id, undefined, 20_000);
      expect(batch.status).toBe('cancelled');
      expect(batch.request_counts).toEqual({ total: 8, completed: 0, failed: 8 });
      const { errors, ids, duplicates } = await collectResults(openai, batch);
      expect(duplicates).toEqual([]);
      expect(ids.size).toBe(8);
      expect(errors.every((line) => line.error?.code === 'batch_cancelled')).toBe(true);
      expect(aws.sfn.paths.get(created.id)).toEqual([
        'Validate',
        'AfterValidate',
        'Enqueue',
        'WaitForChunks',
        'BatchCancelled',
        'DrainAfterCancel',
        'States.Timeout',
        'Finalize',
      ]);
      await aws.settle(); // the workers' attempts time out, and their late results are discarded
      expect(await aws.blobs.list(`batches/${created.id}/chunks/`)).toEqual([]);
    } finally {
      aws.sfn.timeoutScale = 1;
      upstream.configure({ hangRate: 0 });
    }
  });

  it('wait-for-chunks: fails on a cancel, but while draining leaves the token to the last worker', async () => {
    const signals = () => [aws.awsCalls.get('StepFunctions.SendTaskSuccess') ?? 0, aws.awsCalls.get('StepFunctions.SendTaskFailure') ?? 0];
    const batch = batchRecord({ status: 'cancelling', chunkCount: 2, cancellingAtMs: Date.now() });
    await aws.meta.createBatch(batch);
    const outcome = { attempt: 'a', completed: 1, failed: 0, unrun: 0, usage: { ...ZERO_USAGE } };
    await aws.meta.recordChunk(batch.id, { index: 0, ...outcome });

    let before = signals();
    await aws.invoke('wait-for-chunks', { batchId: batch.id, taskToken: 'token-wait' });
    expect(signals()).toEqual([before[0], before[1]! + 1]);

    before = signals();
    await aws.invoke('wait-for-chunks', { batchId: batch.id, taskToken: 'token-drain', draining: true });
    expect(signals()).toEqual(before);
    expect((await aws.meta.getBatch(batch.id))?.taskToken).toBe('token-drain');

    // The last chunk came in before the drain stored its token: the drain answers it at once.
    await aws.meta.recordChunk(batch.id, { index: 1, ...outcome });
    before = signals();
    await aws.invoke('wait-for-chunks', { batchId: batch.id, taskToken: 'token-drain-2', draining: true });
    expect(signals()).toEqual([before[0]! + 1, before[1]]);

    // A batch that is no longer running goes on to Finalize.
    await advance({ meta: aws.meta, clock: { now: Date.now } }, batch.id, 'finalizing');
    before = signals();
    await aws.invoke('wait-for-chunks', { batchId: batch.id, taskToken: 'token-drain-3', draining: true });
    expect(signals()).toEqual([before[0]! + 1, before[1]]);
  });

  it('expires: the wait times out at the end of the window, and every line is batch_expired', async () => {
    upstream.configure({ hangRate: 1 });
    aws.sfn.timeoutScale = 0.25; // waitSeconds is the window (2 s) plus the drain (3 s timeout + 5 s)
    try {
      const created = await submit(openai, chatLines(8, { prefix: 'too-late' }), { window: '2s' });
      const batch = await waitForBatch(openai, created.id, undefined, 20_000);
      expect(batch.status).toBe('expired');
      expect(batch.request_counts).toEqual({ total: 8, completed: 0, failed: 8 });
      const { errors, ids, duplicates } = await collectResults(openai, batch);
      expect(duplicates).toEqual([]);
      expect(ids.size).toBe(8);
      expect(errors.every((line) => line.error?.code === 'batch_expired')).toBe(true);
      expect(aws.sfn.paths.get(created.id)).toEqual([
        'Validate',
        'AfterValidate',
        'Enqueue',
        'WaitForChunks',
        'States.Timeout',
        'Finalize',
      ]);
      await aws.settle(); // the workers' attempts time out, and their late results are discarded
      expect(await aws.blobs.list(`batches/${created.id}/chunks/`)).toEqual([]);
    } finally {
      aws.sfn.timeoutScale = 1;
      upstream.configure({ hangRate: 0 });
    }
  });

  it('answers a download too large for a Lambda response with a redirect to S3, which the SDK follows', async () => {
    // 4.2 MiB: within API Gateway's upload limit as base64, past the 4 MiB download threshold.
    const padding = 'x'.repeat(2_000);
    const lines = Array.from({ length: 2_150 }, (_, i) => ({
      custom_id: `big-${i}`,
      method: 'POST',
      url: '/v1/chat/completions',
      body: { model: 'batch-test-model', messages: [{ role: 'user', content: `${i} ${padding}` }] },
    }));
    const path = await writeJsonl(lines, 'large.jsonl');
    const bytes = await readFile(path);
    expect(bytes.length).toBeGreaterThan(4 * 1024 * 1024);
    const file = await upload(openai, path);
    expect(file.bytes).toBe(bytes.length);

    const before = aws.apiExchanges.length;
    const content = Buffer.from(await (await openai.files.content(file.id)).arrayBuffer());
    expect(content.equals(bytes)).toBe(true);
    const download = aws.apiExchanges.slice(before).find((exchange) => exchange.path.endsWith('/content'))!;
    expect(download.status).toBe(307);
    expect(new URL(download.location!).searchParams.get('X-Amz-Signature')).toBeTruthy();
    expect(download.resultBytes).toBeLessThan(10_000);

    // A small file still streams through the API.
    const small = await upload(openai, REVIEWS);
    await openai.files.content(small.id);
    expect(aws.apiExchanges.at(-1)).toMatchObject({ status: 200 });
  });

  it('takes a file larger than an API Gateway request through the Uploads API, joined on S3', async () => {
    // Two parts of about 3 MiB (each within a Lambda payload as base64), 6 MiB in all: past what
    // POST /v1/files can carry through API Gateway, and joined on S3 by streaming.
    const lines = Array.from(
      { length: 3_000 },
      (_, i) =>
        `${JSON.stringify({
          custom_id: `up-${i}`,
          method: 'POST',
          url: '/v1/chat/completions',
          body: { model: 'batch-test-model', messages: [{ role: 'user', content: `${i} ${'y'.repeat(2_000)}` }] },
        })}\n`,
    );
    const data = Buffer.from(lines.join(''));
    const cut = data.indexOf('\n', Math.floor(data.length / 2)) + 1;
    const upload = await openai.uploads.create({
      filename: 'big.jsonl',
      purpose: 'batch',
      bytes: data.length,
      mime_type: 'application/jsonl',
    });
    const parts = [];
    for (const piece of [data.subarray(0, cut), data.subarray(cut)]) {
      parts.push(await openai.uploads.parts.create(upload.id, { data: new File([new Uint8Array(piece)], 'part') }));
    }
    const done = await openai.uploads.complete(upload.id, { part_ids: parts.map((part) => part.id) });
    expect(done.file).toMatchObject({ bytes: data.length, purpose: 'batch' });
    const content = Buffer.from(await (await openai.files.content(done.file!.id)).arrayBuffer());
    expect(content.equals(data)).toBe(true);
  });

  it('reports a malformed SQS message as a batch item failure, beside a good one', async () => {
    const record = (messageId: string, body: string) => ({
      messageId,
      receiptHandle: messageId,
      body,
      attributes: { ApproximateReceiveCount: '1', SentTimestamp: '0', SenderId: 'x', ApproximateFirstReceiveTimestamp: '0' },
      messageAttributes: {},
      md5OfBody: '',
      eventSource: 'aws:sqs',
      eventSourceARN: 'arn:aws:sqs:us-east-1:123456789012:batch-chunks',
      awsRegion: 'us-east-1',
    });
    const late = JSON.stringify({ batchId: 'batch_gone', inputBlobKey: 'files/none', chunk: { index: 0, start: 0, end: 1, requests: 1 } });
    const response = await aws.invoke('worker', { Records: [record('bad', 'not json'), record('late', late)] });
    // The chunk of a batch that does not exist is acknowledged: there is nothing left to do for it.
    expect(response).toEqual({ batchItemFailures: [{ itemIdentifier: 'bad' }] });
  });

  it("answers 401 to an unknown or revoked key, and 404 to another project's objects", async () => {
    const stranger = aws.openai('sk-batch-unknownunknownunknownunknown0000');
    await expect(stranger.files.list()).rejects.toMatchObject({ status: 401, code: 'invalid_api_key' });
    const noKey = await aws.apiFetch('https://api.batch.test/v1/batches');
    expect(noKey.status).toBe(401);
    expect(await noKey.json()).toMatchObject({ error: { code: 'missing_api_key', type: 'invalid_request_error' } });

    const revokedKey = await aws.createKey('team-c');
    const record = (await aws.meta.listApiKeys('team-c'))[0]!;
    await aws.meta.revokeApiKey(record.keyHash, Date.now());
    await expect(aws.openai(revokedKey).files.list()).rejects.toMatchObject({ status: 401 });

    const other = aws.openai(await aws.createKey('team-b'));
    const theirs = await upload(other, REVIEWS);
    await expect(openai.files.retrieve(theirs.id)).rejects.toMatchObject({ status: 404 });
    expect((await other.files.retrieve(theirs.id)).id).toBe(theirs.id);
  });

  it('extension routes over S3 and DynamoDB: results paged and one by custom_id, a retry of the failed lines; the console page', async () => {
    upstream.configure({
      failWhen: (_body, { key }) => (key.includes('x-flaky') ? { status: 503, body: { error: { message: 'overloaded' } } } : undefined),
    });
    const created = await submit(openai, [
      ...chatLines(6, { prefix: 'x-ok' }),
      ...chatLines(2, { prefix: 'x-flaky' }).map((line, i) => ({ ...line, custom_id: `flaky-${i}` })),
    ]);
    const batch = await waitForBatch(openai, created.id);
    upstream.configure({ failWhen: undefined });
    expect(batch.request_counts).toEqual({ total: 8, completed: 6, failed: 2 });
    const page = (await openai.get(`/x/batches/${batch.id}/results`, { query: { limit: 5 } })) as {
      data: { custom_id: string }[];
      has_more: boolean;
      next_after: string;
    };
    expect(page.data).toHaveLength(5);
    expect(page.has_more).toBe(true);
    const rest = (await openai.get(`/x/batches/${batch.id}/results`, { query: { after: page.next_after } })) as {
      data: { custom_id: string }[];
    };
    expect([...page.data, ...rest.data].map((line) => line.custom_id).sort()).toEqual(
      [...chatLines(6).map((l) => l.custom_id), 'flaky-0', 'flaky-1'].sort(),
    );
    expect(await openai.get(`/x/batches/${batch.id}/results`, { query: { custom_id: 'flaky-1' } })).toMatchObject({
      custom_id: 'flaky-1',
      response: { status_code: 503 },
    });

    const retry = (await openai.post(`/x/batches/${batch.id}/retry`, { body: {} })) as { id: string; x_retry_of: string };
    expect(retry.x_retry_of).toBe(batch.id);
    const done = await waitForBatch(openai, retry.id);
    expect(done.request_counts).toEqual({ total: 2, completed: 2, failed: 0 });
    expect(await openai.batches.retrieve(batch.id)).toMatchObject({ x_retried_by: retry.id });

    const consolePage = await aws.apiFetch('https://api.batch.test/console/');
    expect(consolePage.status).toBe(200);
    expect(await consolePage.text()).toContain('API key');
  });

  describe('no failure leaves a batch where nothing moves it', () => {
    /** Wraps a handler for the batches whose id `only` accepts; the original comes back after the test. */
    function breakHandler(name: 'validate' | 'finalize' | 'enqueue', wrap: (original: any) => any) {
      const original = aws.handlers[name]!;
      aws.handlers[name] = wrap(original);
      return () => {
        aws.handlers[name] = original;
      };
    }

    it('a validation that fails on every try ends the batch failed with the reason, and lets go of its input', async () => {
      const restore = breakHandler('validate', () => async () => {
        throw new RangeError('Item size to update has exceeded the maximum allowed size');
      });
      try {
        const input = await upload(openai, await writeJsonl(chatLines(3, { prefix: 'never-validated' })));
        const created = await openai.batches.create({
          input_file_id: input.id,
          endpoint: '/v1/chat/completions',
          completion_window: '24h',
        });
        await openai.files.delete(input.id); // pinned: its bytes stay until the batch is final
        const batch = await waitForBatch(openai, created.id);
        expect(batch).toMatchObject({ status: 'failed', failed_at: expect.any(Number), output_file_id: null, error_file_id: null });
        expect(batch.errors?.data).toEqual([
          {
            code: 'validation_failed',
            message: 'The input file could not be validated: validation failed after its retries (RangeError).',
            param: null,
            line: null,
          },
        ]);
        await aws.settle();
        expect(aws.sfn.paths.get(created.id)).toEqual(['Validate', 'Validate', 'Validate', 'FailBatch', 'BatchFailed']);
        // The pin is gone with the batch: the deleted input went too.
        expect(await aws.meta.getInputFile('team-a', input.id)).toBeUndefined();
      } finally {
        restore();
      }
    });

    it('a finalization that fails on every try ends the batch failed, never finalizing for good', async () => {
      // Each try gets as far as finalizing, then dies (as joining huge lines into one string did).
      const restore = breakHandler('finalize', (original) => async (event: any, context: any) => {
        if (event.failure) return original(event, context);
        await advance({ meta: aws.meta, clock: { now: () => Date.now() } }, event.batchId, 'finalizing');
        throw new RangeError('Invalid string length');
      });
      try {
        const created = await submit(openai, chatLines(5, { prefix: 'never-finalized' }));
        const batch = await waitForBatch(openai, created.id);
        expect(batch).toMatchObject({ status: 'failed', output_file_id: null, error_file_id: null });
        expect(batch.errors?.data).toMatchObject([{ code: 'finalization_failed', message: expect.stringContaining('(RangeError)') }]);
        await aws.settle();
        expect(aws.sfn.paths.get(created.id)!.slice(-5)).toEqual(['Finalize', 'Finalize', 'Finalize', 'FailBatch', 'BatchFailed']);
        expect(await aws.blobs.list(`batches/${created.id}/`)).toEqual([]);
      } finally {
        restore();
      }
    });

    it('a chunk that fails on every delivery is given up on its last receive: counted failed, the batch ends failed, no dead letter', async () => {
      // The input's bytes vanish between validation and the chunks (as an S3 expiry rule could do):
      // every run of every chunk fails to read it.
      const restore = breakHandler('enqueue', (original) => async (event: any, context: any) => {
        const batch = (await aws.meta.getBatch(event.batchId))!;
        const file = (await aws.meta.getInputFile(batch.project, batch.inputFileId))!;
        await aws.blobs.delete([file.blobKey]);
        return original(event, context);
      });
      const deadLetters = aws.sqs.deadLetters.length;
      try {
        const created = await submit(openai, chatLines(6, { prefix: 'input-gone' }));
        const batch = await waitForBatch(openai, created.id, undefined, 30_000);
        expect(batch).toMatchObject({ status: 'failed', request_counts: { total: 6, completed: 0, failed: 6 } });
        expect(new Set(batch.errors?.data?.map((entry) => entry.code))).toEqual(new Set(['chunk_failed']));
        expect(batch.errors?.data?.[0]?.message).toMatch(/failed on every delivery \(BlobNotFoundError\)/);
        await aws.settle();
        // Given up on the last of the queue's five receives, not parked in the dead-letter queue. (On a
        // loaded machine a run can outlast this stand-in's 1 s visibility timeout, and a receive then
        // overlaps the one before; the stack's visibility timeout is six times the worker's.)
        const receives = [0, 1].map((index) => aws.sqs.deliveries.get(`${created.id}/${index}`)!);
        for (const count of receives) expect(count).toBeGreaterThanOrEqual(5);
        if (receives.every((count) => count === 5)) expect(aws.sqs.deadLetters.length).toBe(deadLetters);
        expect(aws.sfn.paths.get(created.id)).toEqual(['Validate', 'AfterValidate', 'Enqueue', 'WaitForChunks', 'TaskSuccess', 'Finalize']);
      } finally {
        restore();
      }
    });
  });

  it('never lets the upstream key reach the error file, even from an upstream that echoes its request headers', async () => {
    upstream.configure({ echoHeaders: { format: 'json' } });
    try {
      const created = await submit(openai, chatLines(3, { prefix: 'echo-me' }));
      const batch = await waitForBatch(openai, created.id);
      expect(batch.request_counts).toEqual({ total: 3, completed: 0, failed: 3 });
      const text = await (await openai.files.content(batch.error_file_id!)).text();
      expect(text).not.toContain('upstream-secret');
      expect(text).toContain('Bearer [redacted]');
    } finally {
      upstream.configure({ echoHeaders: undefined });
    }
  });
});
