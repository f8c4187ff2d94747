// Pipeline runs on DynamoDB, in the MetaStore's table (its first store split per item kind):
//   run  pk = PIPELINERUN#<run id>  gsi1pk = <project>#PIPELINE#<pipeline>  gsi1sk = <createdAtMs, 15 digits>#<id>
//        the PipelineRunRecord's fields; nulls native.
// A run is created only where none has its id (attribute_not_exists): the one write that makes a
// trigger delivered twice act once. Listing a pipeline's runs reads the byProject index.
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient, GetCommand, PutCommand, QueryCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import type { PipelineRunRecord, RunStatus } from '../../pipelines/model.js';
import type { Page, PipelineRunChanges, PipelineRunStore } from '../../ports.js';
import { BY_PROJECT_INDEX, ITEM_KEY_PREFIXES } from './dynamo-meta-store.js';

const runKey = (id: string) => ({ pk: `${ITEM_KEY_PREFIXES.pipelineRun}${id}` });
const listKey = (project: string, pipeline: string) => `${project}#PIPELINE#${pipeline}`;

const FIELDS = [
  'id',
  'project',
  'pipeline',
  'trigger',
  'runKey',
  'runAtMs',
  'source',
  'destination',
  'status',
  'batchId',
  'inputFileId',
  'error',
  'claimUntilMs',
  'deliveryAttempts',
  'createdAtMs',
  'updatedAtMs',
] as const satisfies readonly (keyof PipelineRunRecord)[];

function fromItem(item: Record<string, unknown>): PipelineRunRecord {
  const run = Object.fromEntries(FIELDS.map((field) => [field, item[field]])) as unknown as PipelineRunRecord;
  return { ...run, error: run.error ? { code: run.error.code, message: run.error.message } : null };
}

function isConditionalCheckFailed(error: unknown): error is Error & { Item?: Record<string, never> } {
  return error instanceof Error && error.name === 'ConditionalCheckFailedException';
}

export class DynamoPipelineRunStore implements PipelineRunStore {
  private readonly doc: DynamoDBDocumentClient;
  private readonly tableName: string;

  constructor(options: { client: DynamoDBClient; tableName: string }) {
    this.doc = DynamoDBDocumentClient.from(options.client, { marshallOptions: { removeUndefinedValues: true } });
    this.tableName = options.tableName;
  }

  async createRun(run: PipelineRunRecord) {
    try {
      await this.doc.send(
        new PutCommand({
          TableName: this.tableName,
          Item: {
            ...runKey(run.id),
            gsi1pk: listKey(run.project, run.pipeline),
            gsi1sk: `${String(run.createdAtMs).padStart(15, '0')}#${run.id}`,
            ...run,
          },
          ConditionExpression: 'attribute_not_exists(pk)',
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
        }),
      );
      return { created: true as const, run };
    } catch (error) {
      if (!isConditionalCheckFailed(error)) throw error;
      // The run that won; dynalite does not return it with the failure, so read it then.
      const existing = error.Item ? fromItem(unmarshall(error.Item)) : await this.getRun(run.id);
      if (!existing) throw error;
      return { created: false as const, run: existing };
    }
  }

  async getRun(id: string): Promise<PipelineRunRecord | undefined> {
    const out = await this.doc.send(new GetCommand({ TableName: this.tableName, Key: runKey(id), ConsistentRead: true }));
    return out.Item ? fromItem(out.Item) : undefined;
  }

  async takeOverRun(id: string, nowMs: number, untilMs: number): Promise<PipelineRunRecord | undefined> {
    return this.update(id, { claimUntilMs: untilMs, updatedAtMs: nowMs }, '#status = :importing AND claimUntilMs <= :now', {
      ':importing': 'importing',
      ':now': nowMs,
    });
  }

  async updateRun(id: string, from: readonly RunStatus[], changes: PipelineRunChanges): Promise<PipelineRunRecord | undefined> {
    const values = Object.fromEntries(from.map((status, i) => [`:from${i}`, status]));
    return this.update(id, changes, `#status IN (${Object.keys(values).join(', ')})`, values);
  }

  async listRuns(project: string, pipeline: string, query: { limit: number; after?: string }): Promise<Page<PipelineRunRecord>> {
    let startKey: Record<string, unknown> | undefined;
    if (query.after !== undefined) {
      const after = await this.doc.send(new GetCommand({ TableName: this.tableName, Key: runKey(query.after) }));
      if (!after.Item || after.Item.project !== project || after.Item.pipeline !== pipeline) return { items: [], hasMore: false };
      startKey = { pk: after.Item.pk, gsi1pk: after.Item.gsi1pk, gsi1sk: after.Item.gsi1sk };
    }
    const out = await this.doc.send(
      new QueryCommand({
        TableName: this.tableName,
        IndexName: BY_PROJECT_INDEX,
        KeyConditionExpression: 'gsi1pk = :gsi1pk',
        ExpressionAttributeValues: { ':gsi1pk': listKey(project, pipeline) },
        ScanIndexForward: false,
        Limit: query.limit + 1,
        ExclusiveStartKey: startKey,
      }),
    );
    const items = (out.Items ?? []).map(fromItem);
    return { items: items.slice(0, query.limit), hasMore: items.length > query.limit };
  }

  private async update(
    id: string,
    changes: PipelineRunChanges,
    condition: string,
    conditionValues: Record<string, unknown>,
  ): Promise<PipelineRunRecord | undefined> {
    const entries = Object.entries(changes).filter(([, value]) => value !== undefined);
    const names: Record<string, string> = { '#status': 'status' };
    const values: Record<string, unknown> = { ...conditionValues };
    const sets = entries.map(([field, value], i) => {
      names[`#f${i}`] = field;
      values[`:v${i}`] = value;
      return `#f${i} = :v${i}`;
    });
    try {
      const out = await this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: runKey(id),
          UpdateExpression: `SET ${sets.join(', ')}`,
          // attribute_exists: an update never creates a bare item.
          ConditionExpression: `attribute_exists(pk) AND ${condition}`,
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: values,
          ReturnValues: 'ALL_NEW',
        }),
      );
      return out.Attributes ? fromItem(out.Attributes) : undefined;
    } catch (error) {
      if (isConditionalCheckFailed(error)) return undefined;
      throw error;
    }
  }
}
