// The file-reaper handler on the table's stream, in-process over dynalite and s3rver: a record the
// TTL removed is handed over as DynamoDB Streams does (REMOVE, DynamoDB's own principal, the old
// image). An input a running batch still pins gets its record back, the batch completes, and once
// the batch has ended the next removal deletes the object; a file no batch pins loses its object at
// once; a user's delete (not the TTL) and other items are left alone.
import { DeleteItemCommand, GetItemCommand } from '@aws-sdk/client-dynamodb';
import type { DynamoDBStreamEvent } from 'aws-lambda';
import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TTL_PRINCIPAL } from '../../functions/contract.js';
import { logger } from '../../functions/observability.js';
import { AwsHarness } from '../support/aws-harness.js';
import { chatLines, collectResults, submit, upload, waitForBatch, writeJsonl } from '../support/e2e.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';

describe('the file reaper', () => {
  let upstream: UpstreamSim;
  let aws: AwsHarness;
  let openai: OpenAI;
  let sequence = 0;

  beforeAll(async () => {
    process.env.POWERTOOLS_METRICS_DISABLED = 'true';
    logger().setLogLevel('SILENT');
    upstream = await startUpstreamSim({ latencyMs: 5 });
    aws = await AwsHarness.start({
      env: { UPSTREAM_CONFIG: JSON.stringify({ default: { baseUrl: upstream.baseURL }, routes: {} }), CHUNK_MAX_REQUESTS: '2' },
    });
    openai = aws.openai(await aws.createKey('team-a'));
  });
  afterAll(async () => {
    await aws?.close();
    await upstream?.close();
  });

  /** Removes an item as DynamoDB's TTL (or, with `by`, someone else) does, and returns its stream record. */
  async function remove(pk: string, by: { type: string; principalId: string } = { type: 'Service', principalId: TTL_PRINCIPAL }) {
    const { tableName, client } = aws.dynamo;
    const { Item } = await client.send(new GetItemCommand({ TableName: tableName, Key: { pk: { S: pk } }, ConsistentRead: true }));
    expect(Item, `${pk} exists`).toBeDefined();
    await client.send(new DeleteItemCommand({ TableName: tableName, Key: { pk: { S: pk } } }));
    sequence += 1;
    return {
      eventName: 'REMOVE' as const,
      userIdentity: by,
      dynamodb: {
        Keys: { pk: { S: pk } },
        OldImage: Item as never,
        SequenceNumber: String(sequence),
        StreamViewType: 'NEW_AND_OLD_IMAGES' as const,
      },
    };
  }
  const reap = (...records: unknown[]) => aws.invoke('file-reaper', { Records: records } as DynamoDBStreamEvent);

  it('keeps the input of a running batch (its record comes back), and deletes its object once the batch has ended', async () => {
    upstream.configure({ latencyMs: 400 });
    const created = await submit(openai, chatLines(8, { prefix: 'pinned' }));
    await waitForBatch(openai, created.id, (b) => b.status === 'in_progress');
    expect(await reap(await remove(`FILE#${created.input_file_id}`))).toEqual({ batchItemFailures: [] });
    expect(await aws.meta.getInputFile('team-a', created.input_file_id)).toMatchObject({ id: created.input_file_id });
    upstream.configure({ latencyMs: 5 });
    const done = await waitForBatch(openai, created.id);
    expect(done.status).toBe('completed');
    expect((await collectResults(openai, done)).ids.size).toBe(8);
    expect(await aws.blobs.size(`files/${created.input_file_id}`)).toBeGreaterThan(0);
    // The restored record expires again; no unfinished batch pins it now.
    await reap(await remove(`FILE#${created.input_file_id}`));
    expect(await aws.blobs.size(`files/${created.input_file_id}`)).toBeUndefined();
  });

  it("deletes the object of a file no batch pins, and leaves a user's delete and other items alone", async () => {
    const file = await upload(openai, await writeJsonl(chatLines(2)));
    const other = await upload(openai, await writeJsonl(chatLines(2)));
    const batch = await submit(openai, chatLines(2, { prefix: 'other-item' }));
    await waitForBatch(openai, batch.id);
    expect(
      await reap(
        await remove(`FILE#${file.id}`),
        await remove(`FILE#${other.id}`, { type: 'User', principalId: 'AROAEXAMPLE' }),
        await remove(`BATCH#${batch.id}`),
      ),
    ).toEqual({ batchItemFailures: [] });
    expect(await aws.blobs.size(`files/${file.id}`)).toBeUndefined();
    expect(await aws.blobs.size(`files/${other.id}`)).toBeGreaterThan(0);
  });
});
