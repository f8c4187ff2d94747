// The worker Lambda against its own timeout: a chunk that cannot finish inside one invocation is
// checkpointed and handed back before the invocation ends, as a new SQS message due in a second
// (not a failed receive: the queue's maxReceiveCount is 2 here, and the chunk takes three
// invocations), and each delivery goes on from the checkpoints: every custom_id is sent upstream
// once, and lands once in the output.
import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { logger } from '../../functions/observability.js';
import { AwsHarness } from '../support/aws-harness.js';
import { chatLines, collectResults, submit, waitForBatch } from '../support/e2e.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';

const UPSTREAM_SECRET_ARN = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:upstream-key-AbCdEf';
const WORKER_TIMEOUT_MS = 3_000;

describe('the worker Lambda near its timeout', () => {
  let upstream: UpstreamSim;
  let aws: AwsHarness;
  let openai: OpenAI;
  const invocationMs: number[] = [];

  beforeAll(async () => {
    process.env.POWERTOOLS_METRICS_DISABLED = 'true';
    logger().setLogLevel('SILENT');
    upstream = await startUpstreamSim({ latencyMs: 300 });
    aws = await AwsHarness.start({
      env: {
        UPSTREAM_CONFIG: JSON.stringify({
          default: { baseUrl: upstream.baseURL, apiKeySecret: UPSTREAM_SECRET_ARN, maxConcurrency: 2 },
          routes: {},
        }),
        UPSTREAM_TIMEOUT: '10s',
        CHUNK_MAX_REQUESTS: '100',
        MIN_COMPLETION_WINDOW: '1s',
      },
      secrets: { [UPSTREAM_SECRET_ARN]: JSON.stringify({ apiKey: 'k' }) },
      functionTimeoutMs: { worker: WORKER_TIMEOUT_MS },
      // A failed delivery would come back only after this: a hand-back must not wait for it.
      visibilityTimeoutMs: 60_000,
      maxReceiveCount: 2,
    });
    const worker = aws.handlers.worker!;
    aws.handlers.worker = async (event, context) => {
      const started = performance.now();
      try {
        return await worker(event, context);
      } finally {
        invocationMs.push(performance.now() - started);
      }
    };
    openai = aws.openai(await aws.createKey('team-a'));
  });
  afterAll(async () => {
    await aws?.close();
    await upstream?.close();
  });

  it('hands an unfinished chunk back before the timeout, and the next invocations finish it, each request once', async () => {
    const total = 30;
    const created = await submit(openai, chatLines(total, { prefix: 'deadline' }));
    const batch = await waitForBatch(openai, created.id, undefined, 30_000);
    expect(batch.status).toBe('completed');
    expect(batch.request_counts).toEqual({ total, completed: total, failed: 0 });
    const { output, errors, ids, duplicates } = await collectResults(openai, batch);
    expect(errors).toEqual([]);
    expect(duplicates).toEqual([]);
    expect(output).toHaveLength(total);
    expect(ids.size).toBe(total);

    // 2 in flight at 300 ms a request: about 12 requests an invocation, so at least three of them,
    // every one ended before the timeout.
    expect(invocationMs.length).toBeGreaterThanOrEqual(3);
    expect(Math.max(...invocationMs)).toBeLessThan(WORKER_TIMEOUT_MS);
    // Nothing was sent twice, nothing went to the dead-letter queue.
    const calls = upstream.stats().callsByCustomKey;
    expect(calls.size).toBe(total);
    expect([...calls.values()].every((n) => n === 1)).toBe(true);
    expect(aws.sqs.deadLetters).toEqual([]);
  }, 60_000);
});
