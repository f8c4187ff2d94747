// Pipelines in AWS, in-process: the real pipeline-run, events and API handlers over DynamoDB on
// dynalite and S3 on s3rver (the AWS harness), triggered as EventBridge Scheduler and an S3 Object
// Created rule would: a scheduled run and a drop each become one batch whatever the repeats, the
// results land under the destination prefix when the events function drains, a bad object fails its
// run, and a run by hand goes through the API to the pipeline-run function. Every S3 and DynamoDB
// call the two pipeline functions make is allowed by their synthesized policies.
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import type { CfnResource } from 'aws-cdk-lib';
import { mockClient } from 'aws-sdk-client-mock';
import type { IConstruct } from 'constructs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PipelineRunEvent } from '../../functions/contract.js';
import { logger } from '../../functions/observability.js';
import type { PipelineRunResult } from '../../functions/pipeline-run.js';
import { parsePipelines, pipelineInput } from '../../shared/pipelines/config.js';
import { runBatchId } from '../../shared/pipelines/model.js';
import { FULL_PROPS, synthesize } from '../infra/support.js';
import { type AwsCall, AwsHarness } from '../support/aws-harness.js';
import { chatLines } from '../support/e2e.js';
import { iamRequests, isAllowed, roleStatements } from '../support/iam-policy.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';

const jsonl = (lines: unknown[]) => `${lines.map((l) => JSON.stringify(l)).join('\n')}\n`;
const text = async (body: AsyncIterable<Uint8Array>) => {
  const parts: Buffer[] = [];
  for await (const part of body) parts.push(Buffer.from(part));
  return Buffer.concat(parts).toString('utf8');
};

describe('pipelines in AWS', () => {
  let upstream: UpstreamSim;
  let aws: AwsHarness;
  let key: string;
  const calls: AwsCall[] = [];
  const lambda = mockClient(LambdaClient);
  const run = (event: PipelineRunEvent) => aws.invoke<PipelineRunResult>('pipeline-run', event);
  const pipelines = parsePipelines(FULL_PROPS.pipelines);

  beforeAll(async () => {
    process.env.POWERTOOLS_METRICS_DISABLED = 'true';
    logger().setLogLevel('SILENT');
    upstream = await startUpstreamSim({ latencyMs: 5 });
    aws = await AwsHarness.start({
      env: {
        UPSTREAM_CONFIG: JSON.stringify({ default: { baseUrl: upstream.baseURL }, routes: {} }),
        // What infra/constructs/pipelines.ts gives the functions.
        PIPELINES_CONFIG: JSON.stringify(pipelines.map(pipelineInput)),
        PIPELINE_DEAD_LETTER_QUEUE_URL: 'https://sqs.us-east-1.amazonaws.com/123456789012/pipeline-dead-letters',
        PIPELINE_RUN_FUNCTION: 'pipeline-run',
      },
      onAwsCall: (call) => {
        if (call.fn) calls.push(call);
      },
    });
    // The API invokes the pipeline-run function; here the harness does.
    lambda.on(InvokeCommand).callsFake(async (input) => {
      const event = JSON.parse(Buffer.from(input.Payload as Uint8Array).toString('utf8')) as PipelineRunEvent;
      return { StatusCode: 200, Payload: Buffer.from(JSON.stringify(await run(event))) };
    });
    key = await aws.createKey('reviews');
  });
  afterAll(async () => {
    lambda.restore();
    await aws?.close();
    await upstream?.close();
  });

  async function endAndDrain(batchId: string) {
    await aws.settle();
    expect((await aws.meta.getBatch(batchId))?.status).toBe('completed');
    await aws.invoke('events', {});
  }

  it('runs a schedule once per scheduled time, and writes the results under the destination prefix', async () => {
    await aws.blobs.put('inbox/reviews/2026-12-03.jsonl', jsonl(chatLines(12)));
    // 02:00 in Paris is 01:00 UTC; Scheduler's retry delivers the same time again.
    const event: PipelineRunEvent = { kind: 'schedule', pipeline: 'nightly-reviews', scheduledTime: '2026-12-03T01:00:00Z' };
    const [first, second] = await Promise.all([run(event), run(event)]);
    const outcomes = [first, second].map((o) => o as Extract<PipelineRunResult, { run: unknown }>);
    expect(outcomes.filter((o) => o.duplicate)).toHaveLength(1);
    const made = outcomes.find((o) => !o.duplicate)!.run;
    expect(made).toMatchObject({ status: 'submitted', source: 'inbox/reviews/2026-12-03.jsonl', batchId: runBatchId(made.id) });
    expect((await run(event)) as unknown).toEqual({ run: made, duplicate: true });

    await endAndDrain(made.batchId!);
    const output = await text(await aws.blobs.get(`${made.destination}output.jsonl`));
    expect(
      output
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l).custom_id)
        .sort(),
    ).toEqual(
      chatLines(12)
        .map((l) => l.custom_id)
        .sort(),
    );
    const summary = JSON.parse(await text(await aws.blobs.get(`${made.destination}summary.json`)));
    expect(summary).toMatchObject({ status: 'completed', batch_id: made.batchId, request_counts: { total: 12, completed: 12, failed: 0 } });
    expect(made.destination).toBe(`outbox/reviews/nightly/${made.id}/`);
    // One batch in all.
    expect(
      (await aws.meta.listBatches('reviews', { limit: 10 })).items.filter((b) => b.metadata?.pipeline === 'nightly-reviews'),
    ).toHaveLength(1);
  });

  it('runs each new object once, fails a bad one clearly, and ignores an event of another bucket', async () => {
    await aws.blobs.put('inbox/reviews/drop/a.jsonl', jsonl(chatLines(3)));
    const event: PipelineRunEvent = {
      kind: 'object-created',
      pipeline: 'drop',
      bucket: serviceBucket(aws),
      key: 'inbox/reviews/drop/a.jsonl',
      etag: '"abc"',
      time: '2026-12-03T09:00:00Z',
    };
    const first = (await run(event)) as Extract<PipelineRunResult, { run: unknown }>;
    expect(first.duplicate).toBe(false);
    expect(((await run(event)) as Extract<PipelineRunResult, { run: unknown }>).duplicate).toBe(true);
    await endAndDrain(first.run.batchId!);
    expect(await aws.blobs.size(`${first.run.destination}summary.json`)).toBeGreaterThan(0);

    await aws.blobs.put('inbox/reviews/drop/bad.jsonl', '<html>not a batch</html>\n');
    const bad = (await run({ ...event, key: 'inbox/reviews/drop/bad.jsonl' })) as Extract<PipelineRunResult, { run: unknown }>;
    expect(bad.run).toMatchObject({ status: 'failed', batchId: null, error: { code: 'invalid_file_format' } });
    expect(JSON.parse(await text(await aws.blobs.get(`${bad.run.destination}summary.json`)))).toMatchObject({ status: 'failed' });

    expect(await run({ ...event, bucket: 'someone-elses-bucket' })).toEqual({
      refused: expect.stringMatching(/is not the pipeline's source/),
    });
  });

  it('lists the pipelines and their runs at the API, and runs one by hand through the pipeline-run function', async () => {
    const api = async (path: string, init: RequestInit = {}) => {
      const response = await aws.apiFetch(`https://api.batch.test/v1${path}`, {
        ...init,
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...init.headers },
      });
      return { status: response.status, body: (await response.json()) as any };
    };
    const listed = await api('/x/pipelines');
    expect(listed.body.data.map((p: { name: string }) => p.name)).toEqual(['nightly-reviews', 'drop']);
    expect(listed.body.data[0].last_run.status).toBe('delivered');
    await aws.blobs.put('inbox/reviews/drop/late.jsonl', jsonl(chatLines(2)));
    const headers = { 'idempotency-key': 'late-1' };
    const body = JSON.stringify({ key: 'inbox/reviews/drop/late.jsonl' });
    const byHand = await api('/x/pipelines/drop/runs', { method: 'POST', body, headers });
    expect(byHand.status).toBe(201);
    expect(byHand.body).toMatchObject({ object: 'pipeline.run', trigger: 'manual', status: 'submitted' });
    const again = await api('/x/pipelines/drop/runs', { method: 'POST', body, headers });
    expect([again.status, again.body.id]).toEqual([200, byHand.body.id]);
    const refused = await api('/x/pipelines/drop/runs', { method: 'POST', body: '{}' });
    expect(refused.status).toBe(400);
    await endAndDrain(byHand.body.batch_id);
    const runs = await api('/x/pipelines/drop/runs');
    expect(runs.body.data.map((r: { status: string }) => r.status).sort()).toEqual(['delivered', 'delivered', 'failed']);
  });

  it('makes only calls the synthesized policies of the pipeline functions allow', () => {
    const { template, stack } = synthesize(undefined, { nag: false });
    const logicalId = (construct: IConstruct) => stack.resolve((construct.node.defaultChild as CfnResource).logicalId) as string;
    const service = stack.service;
    const statements = {
      'pipeline-run': roleStatements(template, logicalId(service.pipelines!.runner.role)),
      events: roleStatements(template, logicalId(service.events.dispatcher.role)),
      api: roleStatements(template, logicalId(service.api.handler.role)),
    };
    const resources = { bucket: `<${logicalId(service.storage.bucket)}.Arn>`, table: `<${logicalId(service.storage.table)}.Arn>` };
    const denied = new Set<string>();
    for (const call of calls.filter((c) => c.fn === 'pipeline-run' || c.fn === 'events' || c.fn === 'api')) {
      for (const request of iamRequests(call, resources)) {
        if (!isAllowed(statements[call.fn as keyof typeof statements], request))
          denied.add(`${call.fn}: ${request.action} on ${request.resource}`);
      }
    }
    expect([...denied]).toEqual([]);
    // The calls that matter were made, and the policies are no wider than the prefixes.
    expect(calls.some((c) => c.fn === 'pipeline-run' && c.command === 'GetObject' && String(c.input.Key).startsWith('inbox/'))).toBe(true);
    expect(calls.some((c) => c.fn === 'events' && c.command === 'PutObject' && String(c.input.Key).startsWith('outbox/'))).toBe(true);
    const allowed = (fn: keyof typeof statements, action: string, key: string) =>
      isAllowed(statements[fn], { action, resource: `${resources.bucket}/${key}` });
    expect(allowed('pipeline-run', 's3:GetObject', 'inbox/reviews/2026-12-03.jsonl')).toBe(true);
    expect(allowed('pipeline-run', 's3:GetObject', 'outbox/reviews/drop/x/output.jsonl')).toBe(false);
    expect(allowed('pipeline-run', 's3:GetObject', 'inbox/other/x.jsonl')).toBe(false);
    expect(allowed('events', 's3:PutObject', 'outbox/reviews/drop/run_x/output.jsonl')).toBe(true);
    expect(allowed('events', 's3:PutObject', 'inbox/reviews/drop/x.jsonl')).toBe(false);
    expect(allowed('api', 's3:GetObject', 'inbox/reviews/drop/x.jsonl')).toBe(false);
    expect(
      isAllowed(statements['pipeline-run'], {
        action: 's3:GetObject',
        resource: 'arn:<AWS::Partition>:s3:::partner-feed-bucket/exports/a.jsonl',
      }),
    ).toBe(true);
    expect(
      isAllowed(statements.events, {
        action: 's3:PutObject',
        resource: 'arn:<AWS::Partition>:s3:::partner-results-bucket/batch-results/r/x',
      }),
    ).toBe(true);
    expect(
      isAllowed(statements.events, { action: 's3:PutObject', resource: 'arn:<AWS::Partition>:s3:::partner-feed-bucket/exports/x' }),
    ).toBe(false);
  });
});

/** The service's bucket (s3rver's), as an S3 event names it. */
function serviceBucket(aws: AwsHarness): string {
  return (aws.blobs as unknown as { bucket: string }).bucket;
}
