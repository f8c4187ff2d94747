// The exact writes DynamoMetaStore sends, and how it reads DynamoDB's refusals.

import { ConditionalCheckFailedException, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DeleteCommand, DynamoDBDocumentClient, GetCommand, PutCommand, QueryCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { marshall } from '@aws-sdk/util-dynamodb';
import { mockClient } from 'aws-sdk-client-mock';
import { beforeEach, describe, expect, it } from 'vitest';
import { DynamoMetaStore } from '../../shared/adapters/aws/dynamo-meta-store.js';
import type { ChunkOutcome } from '../../shared/batch/model.js';
import { batchEvent } from '../../shared/events/model.js';
import { batchRecord, fileRecord } from './meta-store-contract.js';

const TABLE = 'meta-table';

const ddb = mockClient(DynamoDBDocumentClient);
const store = new DynamoMetaStore({
  client: new DynamoDBClient({ region: 'us-east-1', credentials: { accessKeyId: 'x', secretAccessKey: 'x' } }),
  tableName: TABLE,
  now: () => 5_000,
});

const conditionFailed = (Item?: ConditionalCheckFailedException['Item']) =>
  new ConditionalCheckFailedException({ message: 'The conditional request failed', $metadata: {}, Item });

const batch = batchRecord({ id: 'batch_1', project: 'proj_1', status: 'in_progress', chunkCount: 4 });
const batchItem = {
  ...batch,
  pk: 'BATCH#batch_1',
  gsi1pk: 'proj_1#BATCH',
  gsi1sk: `${String(batch.createdAtMs).padStart(15, '0')}#batch_1`,
  usage: undefined,
  doneChunks: undefined,
  usageInputTokens: 0,
  usageCachedTokens: 0,
  usageOutputTokens: 0,
  usageReasoningTokens: 0,
  usageTotalTokens: 0,
};

const file = fileRecord({ id: 'file_1', project: 'proj_1', createdAtMs: 1_000, expiresAtMs: 10_000 });
const fileItem = {
  ...file,
  pk: 'FILE#file_1',
  gsi1pk: 'proj_1#FILE',
  gsi1sk: '000000000001000#file_1',
  ttl: 10,
};

const outcome: ChunkOutcome = {
  index: 3,
  attempt: 'att_9',
  completed: 7,
  failed: 3,
  unrun: 2,
  usage: { inputTokens: 100, cachedTokens: 20, outputTokens: 50, reasoningTokens: 5, totalTokens: 150 },
};

beforeEach(() => {
  ddb.reset();
});

describe('recordChunk', () => {
  it('sends one conditional UpdateItem that adds the counts and the chunk', async () => {
    ddb.on(UpdateCommand).resolves({ Attributes: { ...batchItem, completed: 7, doneChunks: new Set([3]) } });

    const result = await store.recordChunk('batch_1', outcome);

    expect(result).toEqual({ recorded: true, batch: { ...batch, completed: 7, doneChunks: [3] } });
    const calls = ddb.commandCalls(UpdateCommand);
    expect(calls).toHaveLength(1);
    expect(calls[0]!.args[0].input).toEqual({
      TableName: TABLE,
      Key: { pk: 'BATCH#batch_1' },
      UpdateExpression:
        'ADD doneChunks :chunkSet, completed :completed, failed :failed, unrun :unrun, ' +
        'usageInputTokens :usageInputTokens, usageCachedTokens :usageCachedTokens, ' +
        'usageOutputTokens :usageOutputTokens, usageReasoningTokens :usageReasoningTokens, ' +
        'usageTotalTokens :usageTotalTokens SET chunkAttempts.#chunk = :attempt',
      ConditionExpression: 'attribute_exists(pk) AND NOT contains(doneChunks, :chunk) AND #status IN (:in_progress, :cancelling)',
      ExpressionAttributeNames: { '#status': 'status', '#chunk': '3' },
      ExpressionAttributeValues: {
        ':chunkSet': new Set([3]),
        ':chunk': 3,
        ':completed': 7,
        ':failed': 3,
        ':unrun': 2,
        ':usageInputTokens': 100,
        ':usageCachedTokens': 20,
        ':usageOutputTokens': 50,
        ':usageReasoningTokens': 5,
        ':usageTotalTokens': 150,
        ':attempt': 'att_9',
        ':in_progress': 'in_progress',
        ':cancelling': 'cancelling',
      },
      ReturnValues: 'ALL_NEW',
      ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
    });
  });

  it('reads the reason from the item DynamoDB returns with the failure, without a second read', async () => {
    ddb
      .on(UpdateCommand)
      .rejectsOnce(conditionFailed({ pk: { S: 'BATCH#batch_1' }, status: { S: 'in_progress' }, doneChunks: { NS: ['1', '3'] } }))
      .rejectsOnce(conditionFailed({ pk: { S: 'BATCH#batch_1' }, status: { S: 'finalizing' }, doneChunks: { NS: ['1'] } }))
      .rejectsOnce(conditionFailed({ pk: { S: 'BATCH#batch_1' }, status: { S: 'completed' } }));

    expect(await store.recordChunk('batch_1', outcome)).toEqual({ recorded: false, reason: 'duplicate' });
    expect(await store.recordChunk('batch_1', outcome)).toEqual({ recorded: false, reason: 'closed' });
    expect(await store.recordChunk('batch_1', outcome)).toEqual({ recorded: false, reason: 'closed' });
    expect(ddb.commandCalls(GetCommand)).toHaveLength(0);
  });

  it('reads the item again when the failure carries none (dynalite, or no item)', async () => {
    ddb.on(UpdateCommand).rejects(conditionFailed());
    ddb
      .on(GetCommand)
      .resolvesOnce({ Item: { ...batchItem, doneChunks: new Set([3]) } })
      .resolvesOnce({ Item: { ...batchItem, status: 'completed' } })
      .resolvesOnce({});

    expect(await store.recordChunk('batch_1', outcome)).toEqual({ recorded: false, reason: 'duplicate' });
    expect(await store.recordChunk('batch_1', outcome)).toEqual({ recorded: false, reason: 'closed' });
    expect(await store.recordChunk('batch_1', outcome)).toEqual({ recorded: false, reason: 'missing' });
    expect(ddb.commandCalls(GetCommand)[0]!.args[0].input).toEqual({
      TableName: TABLE,
      Key: { pk: 'BATCH#batch_1' },
      ConsistentRead: true,
    });
  });

  it('lets other errors through', async () => {
    ddb.on(UpdateCommand).rejects(new Error('throttled'));
    await expect(store.recordChunk('batch_1', outcome)).rejects.toThrow('throttled');
  });
});

describe('updateBatch', () => {
  it('sends one UpdateItem that sets each change, on condition of the status', async () => {
    ddb.on(UpdateCommand).resolves({ Attributes: { ...batchItem, finalizingAtMs: 42 } });

    const updated = await store.updateBatch('batch_1', ['in_progress', 'cancelling'], {
      finalizingAtMs: 42,
      errors: null,
      usage: { inputTokens: 1, cachedTokens: 2, outputTokens: 3, reasoningTokens: 4, totalTokens: 5 },
    });

    expect(updated).toEqual({ ...batch, finalizingAtMs: 42 });
    const calls = ddb.commandCalls(UpdateCommand);
    expect(calls).toHaveLength(1);
    expect(calls[0]!.args[0].input).toEqual({
      TableName: TABLE,
      Key: { pk: 'BATCH#batch_1' },
      UpdateExpression:
        'SET #finalizingAtMs = :finalizingAtMs, #errors = :errors, ' +
        '#usageInputTokens = :usageInputTokens, #usageCachedTokens = :usageCachedTokens, ' +
        '#usageOutputTokens = :usageOutputTokens, #usageReasoningTokens = :usageReasoningTokens, ' +
        '#usageTotalTokens = :usageTotalTokens',
      ConditionExpression: 'attribute_exists(pk) AND #status IN (:from0, :from1)',
      ExpressionAttributeNames: {
        '#status': 'status',
        '#finalizingAtMs': 'finalizingAtMs',
        '#errors': 'errors',
        '#usageInputTokens': 'usageInputTokens',
        '#usageCachedTokens': 'usageCachedTokens',
        '#usageOutputTokens': 'usageOutputTokens',
        '#usageReasoningTokens': 'usageReasoningTokens',
        '#usageTotalTokens': 'usageTotalTokens',
      },
      ExpressionAttributeValues: {
        ':from0': 'in_progress',
        ':from1': 'cancelling',
        ':finalizingAtMs': 42,
        ':errors': null,
        ':usageInputTokens': 1,
        ':usageCachedTokens': 2,
        ':usageOutputTokens': 3,
        ':usageReasoningTokens': 4,
        ':usageTotalTokens': 5,
      },
      ReturnValues: 'ALL_NEW',
    });
  });

  it('answers undefined when the status does not match', async () => {
    ddb.on(UpdateCommand).rejects(conditionFailed());
    expect(await store.updateBatch('batch_1', ['validating'], { taskToken: 't' })).toBeUndefined();
  });

  it('never writes the status or the chunk bookkeeping, even if a caller passes them', async () => {
    ddb.on(UpdateCommand).resolves({ Attributes: batchItem });
    const sneaky = { status: 'finalizing', doneChunks: [1], chunkAttempts: {}, total: 3 } as never;
    await store.updateBatch('batch_1', ['in_progress'], sneaky);
    const input = ddb.commandCalls(UpdateCommand)[0]!.args[0].input;
    expect(input.UpdateExpression).toBe('SET #total = :total');
  });
});

describe('transitionBatch', () => {
  const event = batchEvent({ id: 'batch_1', project: 'proj' }, 'cancelling', 'in_progress', 42);
  const change = { from: 'in_progress' as const, to: 'cancelling' as const, changes: { cancellingAtMs: 42 }, event };

  it('changes the status and appends the event to the outbox in one conditional UpdateItem', async () => {
    ddb.on(UpdateCommand).resolves({ Attributes: { ...batchItem, status: 'cancelling', cancellingAtMs: 42 } });
    expect(await store.transitionBatch('batch_1', change)).toEqual({ ...batch, status: 'cancelling', cancellingAtMs: 42 });
    expect(ddb.commandCalls(UpdateCommand)[0]!.args[0].input).toEqual({
      TableName: TABLE,
      Key: { pk: 'BATCH#batch_1' },
      UpdateExpression:
        'SET #status = :to, pendingEvents = list_append(if_not_exists(pendingEvents, :noEvents), :event), ' +
        'outboxPk = :outboxPk, outboxSk = if_not_exists(outboxSk, :outboxSk), #cancellingAtMs = :cancellingAtMs',
      ConditionExpression: 'attribute_exists(pk) AND #status = :from',
      ExpressionAttributeNames: { '#status': 'status', '#cancellingAtMs': 'cancellingAtMs' },
      ExpressionAttributeValues: {
        ':from': 'in_progress',
        ':to': 'cancelling',
        ':event': [event],
        ':noEvents': [],
        ':outboxPk': 'EVENTS',
        ':outboxSk': '000000000000042#batch_1',
        ':cancellingAtMs': 42,
      },
      ReturnValues: 'ALL_NEW',
      ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
    });
  });

  it('takes a final batch out of the open index', async () => {
    ddb.on(UpdateCommand).resolves({ Attributes: { ...batchItem, status: 'completed' } });
    const done = batchEvent({ id: 'batch_1', project: 'proj' }, 'completed', 'finalizing', 43);
    await store.transitionBatch('batch_1', { from: 'finalizing', to: 'completed', changes: {}, event: done });
    expect(ddb.commandCalls(UpdateCommand)[0]!.args[0].input.UpdateExpression).toMatch(/ REMOVE openPk, openSk$/);
  });

  it('raises the conflict with the item DynamoDB hands back, without reading it again', async () => {
    ddb.on(UpdateCommand).rejects(conditionFailed(marshall({ ...batchItem, status: 'finalizing' }, { removeUndefinedValues: true })));
    await expect(store.transitionBatch('batch_1', change)).rejects.toMatchObject({
      name: 'BatchStatusConflict',
      current: { ...batch, status: 'finalizing' },
    });
    expect(ddb.commandCalls(GetCommand)).toHaveLength(0);
  });
});

describe('createBatch and deleteFile', () => {
  it('creates a batch only if its id is new', async () => {
    ddb.on(PutCommand).rejects(conditionFailed());
    await expect(store.createBatch(batch)).rejects.toThrow('batch batch_1 already exists');
    const input = ddb.commandCalls(PutCommand)[0]!.args[0].input;
    expect(input.ConditionExpression).toBe('attribute_not_exists(pk)');
    expect(input.Item).toMatchObject({ pk: 'BATCH#batch_1', gsi1pk: 'proj_1#BATCH', chunkAttempts: {} });
    expect(input.Item).not.toHaveProperty('usage');
  });

  it("deletes only this project's live file, at once when no batch pins it", async () => {
    ddb.on(DeleteCommand).resolves({ Attributes: fileItem });
    expect(await store.deleteFile('proj_1', 'file_1')).toEqual({ file, blobInUse: false });
    expect(ddb.commandCalls(DeleteCommand)[0]!.args[0].input).toEqual({
      TableName: TABLE,
      Key: { pk: 'FILE#file_1' },
      ConditionExpression:
        '#project = :project AND (attribute_not_exists(expiresAtMs) OR expiresAtMs > :now) AND ' +
        'attribute_not_exists(deletedAtMs) AND attribute_not_exists(pinnedBy)',
      ExpressionAttributeNames: { '#project': 'project' },
      ExpressionAttributeValues: { ':project': 'proj_1', ':now': 5_000 },
      ReturnValues: 'ALL_OLD',
    });
    expect(ddb.commandCalls(UpdateCommand)).toHaveLength(0);
  });

  it('marks a pinned file deleted instead, keeping its blob', async () => {
    ddb.on(DeleteCommand).rejects(conditionFailed());
    ddb.on(UpdateCommand).resolves({ Attributes: { ...fileItem, pinnedBy: new Set(['batch_1']), deletedAtMs: 5_000 } });
    expect(await store.deleteFile('proj_1', 'file_1')).toEqual({ file, blobInUse: true });
    expect(ddb.commandCalls(UpdateCommand)[0]!.args[0].input).toEqual({
      TableName: TABLE,
      Key: { pk: 'FILE#file_1' },
      UpdateExpression: 'SET deletedAtMs = :now',
      ConditionExpression:
        '#project = :project AND (attribute_not_exists(expiresAtMs) OR expiresAtMs > :now) AND ' +
        'attribute_not_exists(deletedAtMs) AND attribute_exists(pinnedBy)',
      ExpressionAttributeNames: { '#project': 'project' },
      ExpressionAttributeValues: { ':project': 'proj_1', ':now': 5_000 },
      ReturnValues: 'ALL_NEW',
    });
  });

  it('answers undefined for a foreign, missing, expired or already deleted file', async () => {
    ddb.on(DeleteCommand).rejects(conditionFailed());
    ddb.on(UpdateCommand).rejects(conditionFailed());
    ddb
      .on(GetCommand)
      .resolvesOnce({ Item: fileItem })
      .resolvesOnce({})
      .resolvesOnce({ Item: { ...fileItem, expiresAtMs: 5_000 } })
      .resolvesOnce({ Item: { ...fileItem, deletedAtMs: 4_000, pinnedBy: new Set(['batch_1']) } });
    expect(await store.deleteFile('proj_2', 'file_1')).toBeUndefined();
    for (let i = 0; i < 3; i++) expect(await store.deleteFile('proj_1', 'file_1')).toBeUndefined();
    expect(ddb.commandCalls(DeleteCommand)).toHaveLength(4);
  });

  it('tries again when the last pin went between its two writes', async () => {
    ddb.on(DeleteCommand).rejectsOnce(conditionFailed()).resolves({ Attributes: fileItem });
    ddb.on(UpdateCommand).rejects(conditionFailed());
    ddb.on(GetCommand).resolves({ Item: fileItem });
    expect(await store.deleteFile('proj_1', 'file_1')).toEqual({ file, blobInUse: false });
    expect(ddb.commandCalls(DeleteCommand)).toHaveLength(2);
  });
});

describe('file pins', () => {
  it('pins with one conditional UpdateItem that adds the batch to the set', async () => {
    ddb.on(UpdateCommand).resolves({ Attributes: { ...fileItem, pinnedBy: new Set(['batch_1']) } });
    expect(await store.pinFile('proj_1', 'file_1', 'batch_1')).toEqual(file);
    expect(ddb.commandCalls(UpdateCommand)[0]!.args[0].input).toEqual({
      TableName: TABLE,
      Key: { pk: 'FILE#file_1' },
      UpdateExpression: 'ADD pinnedBy :batch',
      ConditionExpression:
        '#project = :project AND (attribute_not_exists(expiresAtMs) OR expiresAtMs > :now) AND attribute_not_exists(deletedAtMs)',
      ExpressionAttributeNames: { '#project': 'project' },
      ExpressionAttributeValues: { ':batch': new Set(['batch_1']), ':project': 'proj_1', ':now': 5_000 },
      ReturnValues: 'ALL_NEW',
    });
  });

  it('answers undefined when the file cannot be pinned', async () => {
    ddb.on(UpdateCommand).rejects(conditionFailed());
    expect(await store.pinFile('proj_1', 'file_1', 'batch_1')).toBeUndefined();
  });

  it('unpins with one UpdateItem, and hands back a deleted file left with no pin', async () => {
    ddb
      .on(UpdateCommand)
      .resolvesOnce({ Attributes: { ...fileItem, deletedAtMs: 4_000 } })
      .resolvesOnce({ Attributes: { ...fileItem, deletedAtMs: 4_000, pinnedBy: new Set(['batch_2']) } })
      .resolvesOnce({ Attributes: fileItem })
      .rejectsOnce(conditionFailed());
    expect(await store.unpinFile('file_1', 'batch_1')).toEqual(file);
    expect(await store.unpinFile('file_1', 'batch_1')).toBeUndefined();
    expect(await store.unpinFile('file_1', 'batch_1')).toBeUndefined();
    expect(await store.unpinFile('file_1', 'batch_1')).toBeUndefined();
    expect(ddb.commandCalls(UpdateCommand)[0]!.args[0].input).toEqual({
      TableName: TABLE,
      Key: { pk: 'FILE#file_1' },
      UpdateExpression: 'DELETE pinnedBy :batch',
      ConditionExpression: 'attribute_exists(pk)',
      ExpressionAttributeValues: { ':batch': new Set(['batch_1']) },
      ReturnValues: 'ALL_NEW',
    });
  });

  it('purges only a deleted, unpinned file, and ignores the refusal', async () => {
    ddb.on(DeleteCommand).rejects(conditionFailed());
    await store.purgeDeletedFile('file_1');
    expect(ddb.commandCalls(DeleteCommand)[0]!.args[0].input).toEqual({
      TableName: TABLE,
      Key: { pk: 'FILE#file_1' },
      ConditionExpression: 'attribute_exists(deletedAtMs) AND attribute_not_exists(pinnedBy)',
    });
  });
});

describe('file reads', () => {
  it('hides a deleted file from getFile and listFiles, not from getInputFile', async () => {
    ddb.on(GetCommand).resolves({ Item: { ...fileItem, deletedAtMs: 4_000, pinnedBy: new Set(['batch_1']) } });
    expect(await store.getFile('proj_1', 'file_1')).toBeUndefined();
    expect(await store.getInputFile('proj_1', 'file_1')).toEqual(file);
    expect(await store.getInputFile('proj_2', 'file_1')).toBeUndefined();

    ddb.on(QueryCommand).resolves({ Items: [] });
    await store.listFiles('proj_1', { limit: 10, order: 'desc' });
    expect(ddb.commandCalls(QueryCommand)[0]!.args[0].input.FilterExpression).toBe(
      '(attribute_not_exists(expiresAtMs) OR expiresAtMs > :now) AND attribute_not_exists(deletedAtMs)',
    );
  });
});

describe('upload completion claims', () => {
  const uploadItem = {
    pk: 'UPLOAD#upload_1',
    id: 'upload_1',
    project: 'proj_1',
    filename: 'big.jsonl',
    purpose: 'batch',
    bytes: 10,
    mimeType: 'application/jsonl',
    status: 'pending',
    createdAtMs: 1_000,
    expiresAtMs: 3_601_000,
    fileExpiresAfterSeconds: null,
    fileId: null,
    ttl: 90_002,
  };

  it('claims with one UpdateItem, only while pending and no live claim holds', async () => {
    ddb.on(UpdateCommand).resolves({ Attributes: { ...uploadItem, completingUntilMs: 305_000 } });
    const claimed = await store.claimUploadCompletion('upload_1', 5_000, 305_000);
    expect(claimed).toMatchObject({ id: 'upload_1', status: 'pending', completingUntilMs: 305_000 });
    expect(ddb.commandCalls(UpdateCommand)[0]!.args[0].input).toEqual({
      TableName: TABLE,
      Key: { pk: 'UPLOAD#upload_1' },
      UpdateExpression: 'SET completingUntilMs = :until',
      ConditionExpression: '#status = :pending AND (attribute_not_exists(completingUntilMs) OR completingUntilMs <= :now)',
      ExpressionAttributeNames: { '#status': 'status' },
      ExpressionAttributeValues: { ':until': 305_000, ':pending': 'pending', ':now': 5_000 },
      ReturnValues: 'ALL_NEW',
    });
  });

  it('answers undefined when the claim is refused, and lets other errors through', async () => {
    ddb.on(UpdateCommand).rejects(conditionFailed());
    expect(await store.claimUploadCompletion('upload_1', 5_000, 305_000)).toBeUndefined();
    ddb.on(UpdateCommand).rejects(new Error('throttled'));
    await expect(store.claimUploadCompletion('upload_1', 5_000, 305_000)).rejects.toThrow('throttled');
  });

  it('releases only its own claim, and ignores the refusal', async () => {
    ddb.on(UpdateCommand).rejects(conditionFailed());
    await store.releaseUploadCompletion('upload_1', 305_000);
    expect(ddb.commandCalls(UpdateCommand)[0]!.args[0].input).toEqual({
      TableName: TABLE,
      Key: { pk: 'UPLOAD#upload_1' },
      UpdateExpression: 'REMOVE completingUntilMs',
      ConditionExpression: 'completingUntilMs = :until',
      ExpressionAttributeValues: { ':until': 305_000 },
    });
  });

  it("counts a part's bytes with one UpdateItem whose condition leaves room for them", async () => {
    ddb.on(UpdateCommand).resolves({ Attributes: { ...uploadItem, partBytes: 7 } });
    expect(await store.addUploadPartBytes('upload_1', 7, 10)).toMatchObject({ id: 'upload_1', partBytes: 7 });
    expect(ddb.commandCalls(UpdateCommand)[0]!.args[0].input).toEqual({
      TableName: TABLE,
      Key: { pk: 'UPLOAD#upload_1' },
      UpdateExpression: 'ADD partBytes :bytes',
      ConditionExpression: '#status = :pending AND (attribute_not_exists(partBytes) OR partBytes <= :room)',
      ExpressionAttributeNames: { '#status': 'status' },
      ExpressionAttributeValues: { ':bytes': 7, ':pending': 'pending', ':room': 3 },
      ReturnValues: 'ALL_NEW',
    });
    // A part larger than the limit alone is refused without a write.
    expect(await store.addUploadPartBytes('upload_1', 11, 10)).toBeUndefined();
    expect(ddb.commandCalls(UpdateCommand)).toHaveLength(1);
  });

  it('reads an upload without a claim as one without the field', async () => {
    ddb.on(GetCommand).resolves({ Item: uploadItem });
    expect(await store.getUpload('proj_1', 'upload_1')).not.toHaveProperty('completingUntilMs');
  });
});

describe('filtered batch lists (DashScope)', () => {
  it('bounds the creation time in the key condition and filters the rest, reading a bounded number of items', async () => {
    const page = { Items: [], ScannedCount: 200, LastEvaluatedKey: { pk: 'x', gsi1pk: 'proj_1#BATCH', gsi1sk: 'y' } };
    ddb.on(QueryCommand).resolves(page);
    const listed = await store.listBatches('proj_1', {
      limit: 10,
      filter: {
        createdAfterMs: 1_000,
        createdBeforeMs: 2_000,
        statuses: ['completed', 'failed'],
        inputFileIds: ['file_a'],
        metadataContains: { key: 'ds_name', text: 'weekly' },
      },
    });
    const calls = ddb.commandCalls(QueryCommand);
    expect(calls[0]!.args[0].input).toEqual({
      TableName: TABLE,
      IndexName: 'byProject',
      KeyConditionExpression: 'gsi1pk = :gsi1pk AND gsi1sk BETWEEN :from AND :to',
      FilterExpression: '#status IN (:status0, :status1) AND inputFileId IN (:input0) AND contains(#metadata.#metadataKey, :metadataText)',
      ExpressionAttributeNames: { '#status': 'status', '#metadata': 'metadata', '#metadataKey': 'ds_name' },
      ExpressionAttributeValues: {
        ':gsi1pk': 'proj_1#BATCH',
        ':from': '000000000001000#',
        ':to': '000000000002000#~',
        ':status0': 'completed',
        ':status1': 'failed',
        ':input0': 'file_a',
        ':metadataText': 'weekly',
      },
      ScanIndexForward: false,
      Limit: 200,
      ExclusiveStartKey: undefined,
    });
    // 2,000 items read, none matched: the answer says there is more rather than reading on.
    expect(calls).toHaveLength(10);
    expect(listed).toEqual({ items: [], hasMore: true });
  });
});
