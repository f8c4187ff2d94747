// Quota counters on DynamoDB, in the MetaStore's table:
//   quota  pk = QUOTA#<key>   requests, tokens (numbers), holders (a string set of batch ids)
// Taking is one UpdateItem: ADD the amount and the holder, on condition that the holder is not in
// the set yet (a step that runs again takes nothing twice) and that the counters stay within the
// limits (DynamoDB conditions cannot add: "requests + n <= limit" is written "requests <= limit - n").
// Giving back is the mirror: ADD the negated amount and DELETE the holder, on condition that it is
// in the set, so a release that runs twice gives back once.
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient, GetCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import type { QuotaAmount, QuotaLimits, QuotaStore, QuotaUsage } from '../../ports.js';
import { ITEM_KEY_PREFIXES } from './dynamo-meta-store.js';

const quotaKey = (key: string) => ({ pk: `${ITEM_KEY_PREFIXES.quota}${key}` });

function isConditionalCheckFailed(error: unknown): boolean {
  return error instanceof Error && error.name === 'ConditionalCheckFailedException';
}

export class DynamoQuotaStore implements QuotaStore {
  private readonly doc: DynamoDBDocumentClient;
  private readonly tableName: string;

  constructor(options: { client: DynamoDBClient; tableName: string }) {
    this.doc = DynamoDBDocumentClient.from(options.client, { marshallOptions: { removeUndefinedValues: true } });
    this.tableName = options.tableName;
  }

  async takeQuota(key: string, holder: string, amount: QuotaAmount, limits: QuotaLimits): Promise<'taken' | 'held' | 'full'> {
    // Named pieces of the condition: this holder holds nothing yet; each counter has room for it.
    const notHeld = '(attribute_not_exists(holders) OR NOT contains(holders, :holder))';
    const room = (name: 'requests' | 'tokens', placeholder: string) => `(attribute_not_exists(${name}) OR ${name} <= ${placeholder})`;
    const conditions = [notHeld];
    const values: Record<string, unknown> = {
      ':holder': holder,
      ':holders': new Set([holder]),
      ':r': amount.requests,
      ':t': amount.tokens,
    };
    if (limits.requests !== undefined) {
      if (amount.requests > limits.requests) return 'full';
      conditions.push(room('requests', ':roomR'));
      values[':roomR'] = limits.requests - amount.requests;
    }
    if (limits.tokens !== undefined) {
      if (amount.tokens > limits.tokens) return 'full';
      conditions.push(room('tokens', ':roomT'));
      values[':roomT'] = limits.tokens - amount.tokens;
    }
    try {
      await this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: quotaKey(key),
          UpdateExpression: 'ADD requests :r, tokens :t, holders :holders',
          ConditionExpression: conditions.join(' AND '),
          ExpressionAttributeValues: values,
        }),
      );
      return 'taken';
    } catch (error) {
      if (!isConditionalCheckFailed(error)) throw error;
      // Which piece failed: dynalite returns no item with the failure, so read it.
      const usage = await this.getQuota(key);
      return usage?.holders.includes(holder) ? 'held' : 'full';
    }
  }

  async returnQuota(key: string, holder: string, amount: QuotaAmount): Promise<boolean> {
    try {
      await this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: quotaKey(key),
          UpdateExpression: 'ADD requests :r, tokens :t DELETE holders :holders',
          ConditionExpression: 'contains(holders, :holder)',
          ExpressionAttributeValues: { ':holder': holder, ':holders': new Set([holder]), ':r': -amount.requests, ':t': -amount.tokens },
        }),
      );
      return true;
    } catch (error) {
      if (isConditionalCheckFailed(error)) return false;
      throw error;
    }
  }

  async getQuota(key: string): Promise<QuotaUsage | undefined> {
    const out = await this.doc.send(new GetCommand({ TableName: this.tableName, Key: quotaKey(key), ConsistentRead: true }));
    if (!out.Item) return undefined;
    const item = out.Item as { requests?: number; tokens?: number; holders?: Set<string> };
    return { requests: item.requests ?? 0, tokens: item.tokens ?? 0, holders: [...(item.holders ?? [])].sort() };
  }
}
