// A batch whose StartExecution fails (Step Functions throttling, or down) through every retry: the
// create still answers the batch (`validating`; a client retrying an error would create a second
// one), and the start-sweep function, run as its schedule does, moves it: it starts it again once
// START_SWEEP_AFTER has passed (and the batch then completes), or, once START_SWEEP_GIVE_UP_AFTER
// has passed with every start still refused, ends it failed with the reason and lets go of its input.
import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { logger } from '../../functions/observability.js';
import type { StartSweepResult } from '../../shared/batch/start-sweep.js';
import { AwsHarness } from '../support/aws-harness.js';
import { chatLines, collectResults, submit, waitForBatch } from '../support/e2e.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';

const throttled = () => Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException', $metadata: { httpStatusCode: 400 } });

describe('the start sweep in AWS', () => {
  let upstream: UpstreamSim;
  let aws: AwsHarness;
  let openai: OpenAI;

  beforeAll(async () => {
    process.env.POWERTOOLS_METRICS_DISABLED = 'true';
    logger().setLogLevel('SILENT');
    upstream = await startUpstreamSim({ latencyMs: 5 });
    aws = await AwsHarness.start({
      env: {
        UPSTREAM_CONFIG: JSON.stringify({ default: { baseUrl: upstream.baseURL }, routes: {} }),
        // A refused start takes its retries' backoff (about 2 s) before the create answers.
        START_SWEEP_AFTER: '4s',
        START_SWEEP_GIVE_UP_AFTER: '8s',
      },
    });
    openai = aws.openai(await aws.createKey('team-a'));
  });
  afterAll(async () => {
    await aws?.close();
    await upstream?.close();
  });

  const sweep = () => aws.invoke<StartSweepResult>('start-sweep', {});
  /** Waits until the batch is surely `ms` old (created_at is in whole seconds, rounded down). */
  const aged = (batch: { created_at: number }, ms: number) =>
    new Promise((resolve) => setTimeout(resolve, Math.max(0, (batch.created_at + 1) * 1000 + ms - Date.now())));

  it('starts again a batch whose start failed, which then completes; a running batch is left alone', async () => {
    aws.sfn.refuseStarts = throttled();
    const created = await submit(openai, chatLines(6, { prefix: 'late-start' }));
    expect(created.status).toBe('validating');
    const refused = aws.awsCalls.get('StepFunctions.StartExecution') ?? 0;
    expect(refused).toBeGreaterThanOrEqual(4); // the create's own tries, with backoff
    expect(await sweep()).toEqual({ started: [], failed: [] }); // younger than START_SWEEP_AFTER
    aws.sfn.refuseStarts = undefined;
    await aged(created, 4_100);
    expect(await sweep()).toEqual({ started: [created.id], failed: [] });
    const done = await waitForBatch(openai, created.id);
    expect(done.status).toBe('completed');
    expect((await collectResults(openai, done)).ids.size).toBe(6);
    expect(await sweep()).toEqual({ started: [], failed: [] });
  });

  it('ends failed, with the reason, a batch that no start reached before the give-up time, and lets go of its input', async () => {
    aws.sfn.refuseStarts = throttled();
    const created = await submit(openai, chatLines(3, { prefix: 'never' }));
    await aged(created, 4_100);
    expect(await sweep()).toEqual({ started: [], failed: [] }); // tried, refused again: still validating
    expect((await openai.batches.retrieve(created.id)).status).toBe('validating');
    await aged(created, 8_100);
    expect(await sweep()).toEqual({ started: [], failed: [created.id] });
    aws.sfn.refuseStarts = undefined;
    const failed = await openai.batches.retrieve(created.id);
    expect(failed.status).toBe('failed');
    expect(failed.failed_at).toEqual(expect.any(Number));
    expect(failed.errors?.data).toEqual([
      expect.objectContaining({ code: 'batch_not_started', message: expect.stringContaining('no lifecycle execution ran for it within') }),
    ]);
    // Unpinned: deleting the input now removes its bytes at once.
    await openai.files.delete(created.input_file_id);
    expect(await aws.blobs.size(`files/${created.input_file_id}`)).toBeUndefined();
    expect(await sweep()).toEqual({ started: [], failed: [] });
  });
});
