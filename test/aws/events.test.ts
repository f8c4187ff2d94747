// The events function and the webhook delivery function in-process, over DynamoDB on dynalite, with
// EventBridge and SQS mocked (aws-sdk-client-mock): the exact event put for each status change, the
// delivery recorded and queued, and the delivery function's queue semantics (an attempt per
// message, a failed one queued again with its delay, a malformed message reported as failed).
import { randomUUID } from 'node:crypto';
import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { SendMessageBatchCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { Context, SQSEvent } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import OpenAI from 'openai';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { handler as eventsHandler } from '../../functions/events.js';
import { configureRuntime } from '../../functions/runtime.js';
import { handler as deliveryHandler } from '../../functions/webhook-delivery.js';
import { DynamoMetaStore } from '../../shared/adapters/aws/dynamo-meta-store.js';
import { type EmbeddedDynamo, startEmbeddedDynamo } from '../../shared/adapters/local/embedded-dynamo.js';
import type { BatchStatus } from '../../shared/batch/model.js';
import { batchEvent } from '../../shared/events/model.js';
import { batchRecord, webhookEndpointRecord } from '../adapters/meta-store-contract.js';
import { startWebhookReceiver, type WebhookReceiver } from '../support/webhook-receiver.js';

const credentials = { accessKeyId: 'x', secretAccessKey: 'x' };
const eventBridge = new EventBridgeClient({ region: 'us-east-1', credentials });
const sqs = new SQSClient({ region: 'us-east-1', credentials });
const ebMock = mockClient(eventBridge);
const sqsMock = mockClient(sqs);
const QUEUE_URL = 'https://sqs.us-east-1.amazonaws.com/123456789012/webhooks';

function context(name: string): Context {
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName: name,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:us-east-1:123456789012:function:${name}`,
    memoryLimitInMB: '256',
    awsRequestId: randomUUID(),
    logGroupName: `/aws/lambda/${name}`,
    logStreamName: 'local',
    getRemainingTimeInMillis: () => 60_000,
    done: () => undefined,
    fail: () => undefined,
    succeed: () => undefined,
  };
}

const sqsEvent = (bodies: string[]): SQSEvent => ({
  Records: bodies.map((body, i) => ({
    messageId: `m-${i}-${randomUUID()}`,
    receiptHandle: 'r',
    body,
    attributes: {
      ApproximateReceiveCount: '1',
      SentTimestamp: '0',
      SenderId: 'x',
      ApproximateFirstReceiveTimestamp: '0',
    },
    messageAttributes: {},
    md5OfBody: '',
    eventSource: 'aws:sqs',
    eventSourceARN: 'arn:aws:sqs:us-east-1:123456789012:webhooks',
    awsRegion: 'us-east-1',
  })),
});

/** The delivery ids of every SendMessageBatch so far, with their delays. */
const queued = () =>
  sqsMock
    .commandCalls(SendMessageBatchCommand)
    .flatMap((call) => call.args[0].input.Entries ?? [])
    .map((entry) => ({ deliveryId: JSON.parse(entry.MessageBody!).deliveryId as string, delay: entry.DelaySeconds! }));

describe('events and webhook deliveries in AWS', () => {
  let dynamo: EmbeddedDynamo;
  let meta: DynamoMetaStore;
  let receiver: WebhookReceiver;

  beforeAll(async () => {
    dynamo = await startEmbeddedDynamo({});
    meta = new DynamoMetaStore({ client: dynamo.client, tableName: dynamo.tableName });
    receiver = await startWebhookReceiver();
    configureRuntime({
      env: {
        TABLE_NAME: dynamo.tableName,
        BUCKET_NAME: 'bucket',
        EVENT_BUS_NAME: 'batch-bus',
        WEBHOOK_QUEUE_URL: QUEUE_URL,
        WEBHOOK_ALLOW_PRIVATE_URLS: 'true',
        WEBHOOK_RETRY_BASE: '1s',
        POWERTOOLS_LOG_LEVEL: 'ERROR',
        POWERTOOLS_METRICS_DISABLED: 'true',
      },
      clients: { dynamo: dynamo.client, eventBridge, sqs },
    });
  });
  afterAll(async () => {
    configureRuntime({});
    await receiver.close();
    await dynamo.close();
  });
  beforeEach(() => {
    ebMock.reset();
    sqsMock.reset();
    ebMock.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [] });
    sqsMock.on(SendMessageBatchCommand).resolves({ Successful: [], Failed: [] });
  });

  /** A batch taken from validating to `to`, through `path`, each change with its event in the outbox. */
  async function runBatch(project: string, path: BatchStatus[]) {
    const t0 = 1_780_000_000_000;
    const batch = batchRecord({
      project,
      createdAtMs: t0,
      metadata: { team: 'search' },
      inputFileId: 'file-AAAAAAAAAAAAAAAAAAAAAAAA',
    });
    await meta.createBatch(batch, batchEvent(batch, 'validating', null, t0));
    let from: BatchStatus = 'validating';
    let at = t0;
    let current = batch;
    for (const to of path) {
      at += 1000;
      const changes =
        to === 'completed'
          ? { outputFileId: 'file-BBBBBBBBBBBBBBBBBBBBBBBB', errorFileId: null, completedAtMs: at }
          : to === 'in_progress'
            ? { total: 4, inProgressAtMs: at }
            : {};
      current = await meta.transitionBatch(batch.id, { from, to, changes, event: batchEvent(batch, to, from, at) });
      from = to;
    }
    if (path.includes('completed')) await meta.updateBatch(batch.id, ['completed'], { completed: 3, failed: 1 } as never);
    return current;
  }

  it('puts one EventBridge event for every status change, with the exact detail', async () => {
    const project = `proj_${randomUUID().slice(0, 8)}`;
    const batch = await runBatch(project, ['in_progress', 'finalizing', 'completed']);
    const result = await eventsHandler({}, context('events'));
    expect(result.acknowledged).toBeGreaterThanOrEqual(4);

    const entries = ebMock
      .commandCalls(PutEventsCommand)
      .flatMap((call) => call.args[0].input.Entries ?? [])
      .filter((entry) => JSON.parse(entry.Detail!).id === batch.id);
    expect(entries.map((e) => [e.Source, e.DetailType, e.EventBusName])).toEqual(
      Array(4).fill(['batch-service', 'Batch Status Change', 'batch-bus']),
    );
    const details = entries.map((e) => JSON.parse(e.Detail!));
    expect(details.map((d) => [d.previous_status, d.status])).toEqual([
      [null, 'validating'],
      ['validating', 'in_progress'],
      ['in_progress', 'finalizing'],
      ['finalizing', 'completed'],
    ]);
    expect(details[3]).toEqual({
      id: batch.id,
      project,
      status: 'completed',
      previous_status: 'finalizing',
      event_id: expect.stringMatching(/^evt_/),
      request_counts: { total: 4, completed: 3, failed: 1 },
      input_file_id: 'file-AAAAAAAAAAAAAAAAAAAAAAAA',
      output_file_id: 'file-BBBBBBBBBBBBBBBBBBBBBBBB',
      error_file_id: null,
      metadata: { team: 'search' },
      created_at: 1_780_000_000,
      changed_at: 1_780_000_003,
    });
    expect(entries[3]!.Time).toEqual(new Date(1_780_000_003_000));
    // The outbox is empty: a second run puts nothing again.
    ebMock.resetHistory();
    await eventsHandler({}, context('events'));
    expect(ebMock.commandCalls(PutEventsCommand).filter((c) => c.args[0].input.Entries!.some((e) => e.Detail!.includes(batch.id)))).toEqual(
      [],
    );
  });

  it("drains when invoked by the table's stream (a record of a batch with events in its outbox)", async () => {
    const batch = await runBatch(`proj_${randomUUID().slice(0, 8)}`, ['failed']);
    const record = {
      eventName: 'MODIFY',
      eventSource: 'aws:dynamodb',
      dynamodb: { Keys: { pk: { S: `BATCH#${batch.id}` } }, NewImage: { outboxPk: { S: 'EVENTS' } }, StreamViewType: 'NEW_AND_OLD_IMAGES' },
    };
    const result = await eventsHandler({ Records: [record] }, context('events'));
    expect(result.acknowledged).toBeGreaterThanOrEqual(2);
    expect((await meta.listPendingEvents(1000)).map((p) => p.batch.id)).not.toContain(batch.id);
  });

  it('keeps the events in the outbox when EventBridge refuses an entry, and puts them on the next run', async () => {
    const project = `proj_${randomUUID().slice(0, 8)}`;
    const batch = await runBatch(project, ['failed']);
    ebMock.on(PutEventsCommand).resolves({ FailedEntryCount: 1, Entries: [{ ErrorCode: 'ThrottlingException' }] });
    await eventsHandler({}, context('events'));
    expect((await meta.listPendingEvents(1000)).map((p) => p.batch.id)).toContain(batch.id);
    ebMock.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [] });
    await eventsHandler({}, context('events'));
    expect((await meta.listPendingEvents(1000)).map((p) => p.batch.id)).not.toContain(batch.id);
  });

  it('queues a delivery for each subscribed endpoint; the delivery function sends it signed, retrying a 503 through the queue', async () => {
    const endpoint = webhookEndpointRecord({ url: receiver.url, eventTypes: ['batch.completed', 'batch.failed'] });
    await meta.createWebhookEndpoint(endpoint);
    const batch = await runBatch(endpoint.project, ['in_progress', 'finalizing', 'completed']);
    await eventsHandler({}, context('events'));
    // Only batch.completed is subscribed: one delivery, due at once.
    const [message, ...others] = queued();
    expect(others).toEqual([]);
    expect(message!.delay).toBe(0);

    receiver.answer(503);
    const first = await deliveryHandler(sqsEvent([JSON.stringify({ deliveryId: message!.deliveryId })]), context('webhook-delivery'));
    expect(first).toEqual({ batchItemFailures: [] });
    expect(receiver.received).toHaveLength(1);
    // The next attempt is queued with its backoff (0.5..1 s, rounded up to whole seconds).
    const retry = queued().at(-1)!;
    expect(retry).toEqual({ deliveryId: message!.deliveryId, delay: 1 });

    receiver.answer(200);
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    await deliveryHandler(sqsEvent([JSON.stringify({ deliveryId: retry.deliveryId })]), context('webhook-delivery'));
    expect(receiver.received).toHaveLength(2);
    const request = receiver.received[1]!;
    const event = await new OpenAI({ apiKey: 'x' }).webhooks.unwrap(
      request.body,
      request.headers as Record<string, string>,
      endpoint.secret,
    );
    expect(event).toMatchObject({ object: 'event', type: 'batch.completed', data: { id: batch.id } });
    expect(await meta.getWebhookDelivery(message!.deliveryId)).toBeUndefined();

    // The same message again (SQS delivers at least once): nothing is sent twice.
    sqsMock.resetHistory();
    await deliveryHandler(sqsEvent([JSON.stringify({ deliveryId: retry.deliveryId })]), context('webhook-delivery'));
    expect(receiver.received).toHaveLength(2);
    expect(queued()).toEqual([]);
  });

  it('reports a malformed message as a batch item failure, and the others as done', async () => {
    const out = await deliveryHandler(sqsEvent(['not json', JSON.stringify({ deliveryId: 'whd_missing' })]), context('webhook-delivery'));
    expect(out.batchItemFailures).toHaveLength(1);
  });
});
