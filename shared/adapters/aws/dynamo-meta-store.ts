// The MetaStore on DynamoDB: one table, used in AWS and locally against dynalite.
//
// Why one file of this size: one class implements the whole port over one table, and each method is
// one conditional write whose condition is read beside the item layout below; the contract suites
// (test/adapters/meta-store-contract.ts) hold it to the port as a whole. The seam for a split is per
// item kind (files, batches and their outbox, uploads, api keys: each a store over the same table and
// helpers), to be taken once the rooms that are adding item kinds (events, pipelines) have landed.
//
// Item layout (partition key `pk` only; GSI `byProject` on gsi1pk/gsi1sk lists a project's objects):
//   file   pk = FILE#<id>   gsi1pk = <project>#FILE   gsi1sk = <createdAtMs, 15 digits>#<id>
//          the FileRecord's fields; expiresAtMs absent when null; `ttl` (seconds) when it expires;
//          pinnedBy: a String Set of the unfinished batches that read the file (absent while none);
//          deletedAtMs: set when the user deleted the file while it was pinned (a tombstone: hidden
//          from the API, removed with its blob when the last pin goes).
//   batch  pk = BATCH#<id>  gsi1pk = <project>#BATCH  gsi1sk = as for files
//          the BatchRecord's fields, flat: usage as usageInputTokens, usageCachedTokens,
//          usageOutputTokens, usageReasoningTokens, usageTotalTokens; doneChunks as a Number Set
//          (absent while empty); chunkAttempts as a map; errors, metadata and nulls native;
//          pendingEvents: the outbox, a list of the status-change events not yet acknowledged, with
//          outboxPk = EVENTS and outboxSk = <time of the oldest, 15 digits>#<id> while it is not
//          empty (GSI `outbox`); openPk = OPEN and openSk = <project>#<createdAtMs>#<id> while the
//          batch is not final (GSI `open`).
//   upload pk = UPLOAD#<id>                       the UploadRecord; `ttl` a day after it expires;
//          completingUntilMs: a complete's claim on the join (absent while none holds one);
//          partBytes: the bytes of the parts recorded so far (absent before the first)
//   part   pk = UPLOADPART#<uploadId>#<partId>    the UploadPartRecord; same `ttl` as its upload
//   apikey pk = APIKEY#<sha256 of the key>  gsi1pk = APIKEYS  gsi1sk = as for files
//   signing key  pk = SIGNKEY#<id of an id.secret key>: the SigningKeyRecord (its secret KMS-encrypted)
//   webhook endpoint  pk = WEBHOOK#<id>  gsi1pk = <project>#WEBHOOK  gsi1sk = as for files
//          the WebhookEndpointRecord (its signing secrets included: deliveries are signed with them)
//   webhook delivery  pk = WEBHOOKDELIVERY#<id>  outboxPk = DELIVERIES  outboxSk = <nextAttemptAtMs,
//          15 digits>#<id> (the delivery outbox shares the GSI `outbox` with the events outbox, in
//          its own partition): the WebhookDeliveryRecord, until it arrives or is given up
import type { AttributeValue, CreateTableCommandInput, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import {
  DeleteCommand,
  DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  QueryCommand,
  ScanCommand,
  UpdateCommand,
} from '@aws-sdk/lib-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import {
  type ApiKeyRecord,
  type BatchRecord,
  type BatchStatus,
  type ChunkOutcome,
  type FileRecord,
  type SigningKeyRecord,
  TERMINAL_STATUSES,
  type UploadPartRecord,
  type UploadRecord,
  type UploadStatus,
  type UsageTotals,
} from '../../batch/model.js';
import type { BatchEvent } from '../../events/model.js';
import type { WebhookDeliveryRecord, WebhookEndpointRecord } from '../../events/webhook-model.js';
import {
  type BatchQuery,
  BatchStatusConflict,
  type DeletedFile,
  type DeliveryRetry,
  type FileQuery,
  type MetaStore,
  type Page,
  type PendingEvents,
  type RecordChunkResult,
  type RemovedFile,
  type StatusChange,
  type StatusChanges,
  type WebhookEndpointChanges,
  type WebhookEndpointQuery,
} from '../../ports.js';
import { batchFilterQuery, cursorInRange, FILTERED_PAGE_SIZE, MAX_FILTERED_READS } from './batch-filter.js';

export const TTL_ATTRIBUTE = 'ttl';
export const BY_PROJECT_INDEX = 'byProject';
/** Sparse: only batches whose outbox holds events have its keys (outboxPk, outboxSk). */
export const OUTBOX_INDEX = 'outbox';
/** Sparse: only batches that are not final have its keys (openPk, openSk). */
export const OPEN_INDEX = 'open';
/** The outbox index's one partition: an item holds these keys exactly while its outbox has events. */
export const OUTBOX_PARTITION = 'EVENTS';
const DELIVERIES_PARTITION = 'DELIVERIES';
const OPEN_PARTITION = 'OPEN';

/** A global secondary index on two string attributes, projecting the whole item. */
const globalIndex = (IndexName: string, hash: string, range: string) => ({
  IndexName,
  KeySchema: [
    { AttributeName: hash, KeyType: 'HASH' as const },
    { AttributeName: range, KeyType: 'RANGE' as const },
  ],
  Projection: { ProjectionType: 'ALL' as const },
});

export function metaTableDefinition(tableName: string): CreateTableCommandInput {
  const indexes = [
    globalIndex(BY_PROJECT_INDEX, 'gsi1pk', 'gsi1sk'),
    globalIndex(OUTBOX_INDEX, 'outboxPk', 'outboxSk'),
    globalIndex(OPEN_INDEX, 'openPk', 'openSk'),
  ];
  const keys = ['pk', ...indexes.flatMap((index) => index.KeySchema.map((key) => key.AttributeName))];
  return {
    TableName: tableName,
    BillingMode: 'PAY_PER_REQUEST',
    AttributeDefinitions: keys.map((AttributeName) => ({ AttributeName, AttributeType: 'S' as const })),
    KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }],
    GlobalSecondaryIndexes: indexes,
  };
}

type Item = Record<string, unknown>;
type Key = Record<string, unknown>;

/**
 * The partition-key prefix of each kind of item. The stack's IAM policies grant each function the
 * kinds it touches by these prefixes (dynamodb:LeadingKeys), so a new kind needs its grant there.
 */
export const ITEM_KEY_PREFIXES = {
  file: 'FILE#',
  batch: 'BATCH#',
  upload: 'UPLOAD#',
  uploadPart: 'UPLOADPART#',
  apiKey: 'APIKEY#',
  signingKey: 'SIGNKEY#',
  webhookEndpoint: 'WEBHOOK#',
  webhookDelivery: 'WEBHOOKDELIVERY#',
  /** shared/adapters/aws/dynamo-pipeline-runs.ts */
  pipelineRun: 'PIPELINERUN#',
  /** shared/adapters/aws/dynamo-quotas.ts */
  quota: 'QUOTA#',
} as const;
export type ItemKind = keyof typeof ITEM_KEY_PREFIXES;

const fileKey = (id: string) => ({ pk: `${ITEM_KEY_PREFIXES.file}${id}` });
const batchKey = (id: string) => ({ pk: `${ITEM_KEY_PREFIXES.batch}${id}` });
const uploadKey = (id: string) => ({ pk: `${ITEM_KEY_PREFIXES.upload}${id}` });
const uploadPartKey = (uploadId: string, partId: string) => ({ pk: `${ITEM_KEY_PREFIXES.uploadPart}${uploadId}#${partId}` });
const apiKeyKey = (keyHash: string) => ({ pk: `${ITEM_KEY_PREFIXES.apiKey}${keyHash}` });
const signingKeyKey = (id: string) => ({ pk: `${ITEM_KEY_PREFIXES.signingKey}${id}` });
const webhookEndpointKey = (id: string) => ({ pk: `${ITEM_KEY_PREFIXES.webhookEndpoint}${id}` });
const webhookDeliveryKey = (id: string) => ({ pk: `${ITEM_KEY_PREFIXES.webhookDelivery}${id}` });
const API_KEYS_INDEX_KEY = 'APIKEYS';
/** Upload records outlive their hour by a day, so a late complete or retrieve still gets a clear answer. */
const UPLOAD_RECORD_GRACE_SECONDS = 24 * 3600;
/** A file that has not expired: TTL deletes lazily (up to days late), so conditions and filters check. */
const LIVE_FILE = '(attribute_not_exists(expiresAtMs) OR expiresAtMs > :now)';
const sortKey = (createdAtMs: number, id: string) => `${String(createdAtMs).padStart(15, '0')}#${id}`;

interface FileItem {
  pk: string;
  gsi1pk: string;
  gsi1sk: string;
  id: string;
  project: string;
  filename: string;
  purpose: FileRecord['purpose'];
  bytes: number;
  createdAtMs: number;
  expiresAtMs?: number;
  blobKey: string;
  requests?: number;
  model?: string;
  ttl?: number;
  pinnedBy?: Set<string>;
  deletedAtMs?: number;
}

type UsageAttributes = {
  usageInputTokens: number;
  usageCachedTokens: number;
  usageOutputTokens: number;
  usageReasoningTokens: number;
  usageTotalTokens: number;
};

type BatchItem = Omit<BatchRecord, 'usage' | 'doneChunks' | 'metadata'> &
  UsageAttributes & { pk: string; gsi1pk: string; gsi1sk: string; doneChunks?: Set<number>; metadata: Map<string, string> | null };

// Metadata keys are the client's: `constructor`, `toString` and the like are keys like any other.
// The marshaller takes a plain object that owns a `constructor` for a class instance, so metadata
// goes to it as a Map; what comes back is copied into a null-prototype object.
const metadataAttribute = (metadata: Record<string, string> | null) => (metadata === null ? null : new Map(Object.entries(metadata)));

function metadataOf(attribute: unknown): Record<string, string> | null {
  if (attribute === null || attribute === undefined) return null;
  return Object.assign(Object.create(null) as Record<string, string>, attribute);
}

function usageAttributes(usage: UsageTotals): UsageAttributes {
  return {
    usageInputTokens: usage.inputTokens,
    usageCachedTokens: usage.cachedTokens,
    usageOutputTokens: usage.outputTokens,
    usageReasoningTokens: usage.reasoningTokens,
    usageTotalTokens: usage.totalTokens,
  };
}

function toFileItem(file: FileRecord): FileItem {
  return {
    ...fileKey(file.id),
    gsi1pk: `${file.project}#FILE`,
    gsi1sk: sortKey(file.createdAtMs, file.id),
    id: file.id,
    project: file.project,
    filename: file.filename,
    purpose: file.purpose,
    bytes: file.bytes,
    createdAtMs: file.createdAtMs,
    // Absent rather than NULL, so "never expires" is attribute_not_exists in filters.
    expiresAtMs: file.expiresAtMs ?? undefined,
    blobKey: file.blobKey,
    requests: file.requests,
    model: file.model,
    // DynamoDB TTL wants seconds; round up so the item is never reaped before it expires.
    [TTL_ATTRIBUTE]: file.expiresAtMs === null ? undefined : Math.ceil(file.expiresAtMs / 1000),
  };
}

/**
 * The file a DynamoDB stream record's old image holds, with its pins (the file reaper reads the
 * records TTL removed); undefined for an image of another kind of item.
 */
export function removedFileOf(image: Record<string, AttributeValue> | undefined): RemovedFile | undefined {
  if (!image?.pk?.S?.startsWith(ITEM_KEY_PREFIXES.file)) return undefined;
  const item = unmarshall(image) as FileItem;
  return {
    file: fromFileItem(item as unknown as Item),
    pinnedBy: [...(item.pinnedBy ?? [])],
    ...(item.deletedAtMs === undefined ? {} : { deletedAtMs: item.deletedAtMs }),
  };
}

function fromFileItem(item: Item): FileRecord {
  const { id, project, filename, purpose, bytes, createdAtMs, expiresAtMs, blobKey, requests, model } = item as unknown as FileItem;
  return {
    id,
    project,
    filename,
    purpose,
    bytes,
    createdAtMs,
    expiresAtMs: expiresAtMs ?? null,
    blobKey,
    ...(requests !== undefined ? { requests } : {}),
    ...(model !== undefined ? { model } : {}),
  };
}

function toBatchItem(batch: BatchRecord): BatchItem {
  const { usage, doneChunks, metadata, ...rest } = batch;
  return {
    ...rest,
    metadata: metadataAttribute(metadata),
    ...batchKey(batch.id),
    gsi1pk: `${batch.project}#BATCH`,
    gsi1sk: sortKey(batch.createdAtMs, batch.id),
    ...usageAttributes(usage),
    // DynamoDB has no empty sets: an absent attribute stands for [].
    doneChunks: doneChunks.length > 0 ? new Set(doneChunks) : undefined,
    ...(TERMINAL_STATUSES.includes(batch.status) ? {} : openKeys(batch)),
  };
}

const openKeys = (batch: Pick<BatchRecord, 'id' | 'project' | 'createdAtMs'>) => ({
  openPk: OPEN_PARTITION,
  openSk: `${batch.project}#${sortKey(batch.createdAtMs, batch.id)}`,
});

const outboxSortKey = (event: BatchEvent) => sortKey(event.atMs, event.batchId);

function fromBatchItem(item: Item): BatchRecord {
  const i = item as unknown as BatchItem;
  return {
    id: i.id,
    project: i.project,
    endpoint: i.endpoint,
    inputFileId: i.inputFileId,
    completionWindow: i.completionWindow,
    status: i.status,
    model: i.model,
    metadata: metadataOf(i.metadata),
    outputExpiresAfterSeconds: i.outputExpiresAfterSeconds,
    errors: i.errors,
    outputFileId: i.outputFileId,
    errorFileId: i.errorFileId,
    createdAtMs: i.createdAtMs,
    expiresAtMs: i.expiresAtMs,
    inProgressAtMs: i.inProgressAtMs,
    finalizingAtMs: i.finalizingAtMs,
    completedAtMs: i.completedAtMs,
    failedAtMs: i.failedAtMs,
    expiredAtMs: i.expiredAtMs,
    cancellingAtMs: i.cancellingAtMs,
    cancelledAtMs: i.cancelledAtMs,
    total: i.total,
    completed: i.completed,
    failed: i.failed,
    unrun: i.unrun,
    usage: {
      inputTokens: i.usageInputTokens,
      cachedTokens: i.usageCachedTokens,
      outputTokens: i.usageOutputTokens,
      reasoningTokens: i.usageReasoningTokens,
      totalTokens: i.usageTotalTokens,
    },
    taskToken: i.taskToken ?? null,
    chunkCount: i.chunkCount,
    doneChunks: [...(i.doneChunks ?? [])].sort((a, b) => a - b),
    chunkAttempts: i.chunkAttempts ?? {},
    ...(i.retryOf ? { retryOf: i.retryOf } : {}),
    ...(i.retriedBy ? { retriedBy: i.retriedBy } : {}),
    ...(i.priority ? { priority: i.priority } : {}),
    ...(i.estimatedTokens !== undefined ? { estimatedTokens: i.estimatedTokens } : {}),
    ...(i.route !== undefined ? { route: i.route } : {}),
    ...(i.quotaKeys !== undefined ? { quotaKeys: i.quotaKeys } : {}),
    ...(i.admittedAtMs !== undefined ? { admittedAtMs: i.admittedAtMs } : {}),
    ...(i.dialect ? { dialect: i.dialect } : {}),
    ...(i.autoDeleteInputFile ? { autoDeleteInputFile: true } : {}),
  };
}

/** Fields an update may not touch: identity, the status (transitionBatch's), the chunk bookkeeping (recordChunk's). */
const PROTECTED_BATCH_FIELDS = new Set(['id', 'project', 'status', 'doneChunks', 'chunkAttempts']);

/** The item attributes an update of these record fields sets. */
function batchAttributes(id: string, changes: Partial<BatchRecord>): Item {
  const { usage, ...fields } = changes;
  const attributes: Item = {};
  for (const [name, value] of Object.entries(fields)) {
    if (value !== undefined && !PROTECTED_BATCH_FIELDS.has(name)) attributes[name] = value;
  }
  if (usage) Object.assign(attributes, usageAttributes(usage));
  if (changes.metadata !== undefined) attributes.metadata = metadataAttribute(changes.metadata);
  if (changes.createdAtMs !== undefined) attributes.gsi1sk = sortKey(changes.createdAtMs, id);
  return attributes;
}

function isConditionalCheckFailed(err: unknown): err is Error & { Item?: Record<string, AttributeValue> } {
  return err instanceof Error && err.name === 'ConditionalCheckFailedException';
}

/** The write's answer, or undefined when its condition does not hold. */
async function unlessConditionFails<T>(write: Promise<T>): Promise<T | undefined> {
  try {
    return await write;
  } catch (err) {
    if (isConditionalCheckFailed(err)) return undefined;
    throw err;
  }
}

export class DynamoMetaStore implements MetaStore {
  private readonly doc: DynamoDBDocumentClient;
  private readonly tableName: string;
  private readonly now: () => number;

  constructor({ client, tableName, now = Date.now }: { client: DynamoDBClient; tableName: string; now?: () => number }) {
    this.doc = DynamoDBDocumentClient.from(client, { marshallOptions: { removeUndefinedValues: true } });
    this.tableName = tableName;
    this.now = now;
  }

  // Files

  async putFile(file: FileRecord): Promise<void> {
    await this.doc.send(new PutCommand({ TableName: this.tableName, Item: toFileItem(file) }));
  }

  async getFile(project: string, id: string): Promise<FileRecord | undefined> {
    return this.readFile(project, id, { includeDeleted: false });
  }

  async getInputFile(project: string, id: string): Promise<FileRecord | undefined> {
    return this.readFile(project, id, { includeDeleted: true });
  }

  async listFiles(project: string, query: FileQuery): Promise<Page<FileRecord>> {
    const start = await this.cursorKey(query.after === undefined ? undefined : fileKey(query.after), project);
    if (start === null) return { items: [], hasMore: false };

    // Expired files (TTL is lazy) and deleted ones still pinned by a batch are not listed.
    const filters = [LIVE_FILE, 'attribute_not_exists(deletedAtMs)'];
    const values: Item = { ':now': this.now() };
    if (query.purpose !== undefined) {
      filters.push('purpose = :purpose');
      values[':purpose'] = query.purpose;
    }
    const page = await this.queryByProject({
      gsi1pk: `${project}#FILE`,
      ascending: query.order === 'asc',
      limit: query.limit,
      startKey: start,
      filter: { expression: filters.join(' AND '), values },
    });
    return { items: page.items.map(fromFileItem), hasMore: page.hasMore };
  }

  // Why pins live on the file item: whether a file may go, be kept as a tombstone, or take a new
  // batch is then decided by conditional writes on that one item, so a delete racing a batch's
  // creation or its end never loses bytes a batch still reads, nor keeps them for ever. (Looking
  // for the file's batches at delete time would need an index, and would still race.)
  async deleteFile(project: string, id: string): Promise<DeletedFile | undefined> {
    // Both writes fail when this project has no such live file, and also when a pin came or went
    // between them: a read tells which, and the latter tries again.
    for (let attempt = 0; attempt < 5; attempt++) {
      const removed = await this.deleteUnpinnedFile(project, id);
      if (removed) return { file: removed, blobInUse: false };
      const tombstoned = await this.tombstonePinnedFile(project, id);
      if (tombstoned) return { file: tombstoned, blobInUse: true };
      if (!(await this.getFile(project, id))) return undefined;
    }
    throw new Error(`deleteFile: the pins of file ${id} kept changing`);
  }

  async pinFile(project: string, id: string, batchId: string, keepUntilMs?: number): Promise<FileRecord | undefined> {
    // #project = :project also fails on a missing item, so no bare item is ever created.
    const pinnable = `#project = :project AND ${LIVE_FILE} AND attribute_not_exists(deletedAtMs)`;
    const values = { ':batch': new Set([batchId]), ':project': project, ':now': this.now() };
    const pin = (update: string, condition: string, extra: Item = {}, names: Record<string, string> = {}) =>
      unlessConditionFails(
        this.doc.send(
          new UpdateCommand({
            TableName: this.tableName,
            Key: fileKey(id),
            UpdateExpression: update,
            ConditionExpression: condition,
            ExpressionAttributeNames: { '#project': 'project', ...names },
            ExpressionAttributeValues: { ...values, ...extra },
            ReturnValues: 'ALL_NEW',
          }),
        ),
      );
    // The TTL only grows: it is moved out to the batch's end only where it would come sooner (an
    // update expression has no max(), hence the condition); a file that never expires has none.
    const out =
      (keepUntilMs !== undefined
        ? await pin(
            'ADD pinnedBy :batch SET #ttl = :until',
            `${pinnable} AND attribute_exists(#ttl) AND #ttl < :until`,
            { ':until': Math.ceil(keepUntilMs / 1000) },
            { '#ttl': TTL_ATTRIBUTE },
          )
        : undefined) ?? (await pin('ADD pinnedBy :batch', pinnable));
    return out?.Attributes ? fromFileItem(out.Attributes) : undefined;
  }

  async unpinFile(id: string, batchId: string): Promise<FileRecord | undefined> {
    const out = await unlessConditionFails(
      this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: fileKey(id),
          // DynamoDB (and dynalite) remove the attribute when its set empties.
          UpdateExpression: 'DELETE pinnedBy :batch',
          ConditionExpression: 'attribute_exists(pk)',
          ExpressionAttributeValues: { ':batch': new Set([batchId]) },
          ReturnValues: 'ALL_NEW',
        }),
      ),
    );
    const item = out?.Attributes;
    return item && item.deletedAtMs !== undefined && item.pinnedBy === undefined ? fromFileItem(item) : undefined;
  }

  async purgeDeletedFile(id: string): Promise<void> {
    await unlessConditionFails(
      this.doc.send(
        new DeleteCommand({
          TableName: this.tableName,
          Key: fileKey(id),
          ConditionExpression: 'attribute_exists(deletedAtMs) AND attribute_not_exists(pinnedBy)',
        }),
      ),
    );
  }

  async listExpiredFiles(nowMs: number, limit: number): Promise<FileRecord[]> {
    const found: FileRecord[] = [];
    let startKey: Key | undefined;
    do {
      const out = await this.doc.send(
        new ScanCommand({
          TableName: this.tableName,
          FilterExpression: 'begins_with(pk, :file) AND expiresAtMs <= :now AND attribute_not_exists(pinnedBy)',
          ExpressionAttributeValues: { ':file': ITEM_KEY_PREFIXES.file, ':now': nowMs },
          ExclusiveStartKey: startKey,
        }),
      );
      found.push(...(out.Items ?? []).map(fromFileItem));
      startKey = out.LastEvaluatedKey;
    } while (startKey && found.length < limit);
    return found.slice(0, limit);
  }

  async deleteExpiredFile(id: string, nowMs: number): Promise<boolean> {
    const out = await unlessConditionFails(
      this.doc.send(
        new DeleteCommand({
          TableName: this.tableName,
          Key: fileKey(id),
          ConditionExpression: 'expiresAtMs <= :now AND attribute_not_exists(pinnedBy)',
          ExpressionAttributeValues: { ':now': nowMs },
        }),
      ),
    );
    return out !== undefined;
  }

  async restoreFile(removed: RemovedFile, keepUntilMs: number): Promise<void> {
    await unlessConditionFails(
      this.doc.send(
        new PutCommand({
          TableName: this.tableName,
          Item: {
            ...toFileItem(removed.file),
            [TTL_ATTRIBUTE]: Math.ceil(keepUntilMs / 1000),
            ...(removed.pinnedBy.length > 0 ? { pinnedBy: new Set(removed.pinnedBy) } : {}),
            ...(removed.deletedAtMs === undefined ? {} : { deletedAtMs: removed.deletedAtMs }),
          },
          // Never over a record written since (ids are not reused, but a restore may run twice).
          ConditionExpression: 'attribute_not_exists(pk)',
        }),
      ),
    );
  }

  /** Removes a live file of this project that no batch pins. */
  private async deleteUnpinnedFile(project: string, id: string): Promise<FileRecord | undefined> {
    const out = await unlessConditionFails(
      this.doc.send(
        new DeleteCommand({
          TableName: this.tableName,
          Key: fileKey(id),
          // Another project's file and an expired one look exactly like a missing one; an expired
          // item stays for TTL to reap.
          ConditionExpression: `#project = :project AND ${LIVE_FILE} AND attribute_not_exists(deletedAtMs) AND attribute_not_exists(pinnedBy)`,
          ExpressionAttributeNames: { '#project': 'project' },
          ExpressionAttributeValues: { ':project': project, ':now': this.now() },
          ReturnValues: 'ALL_OLD',
        }),
      ),
    );
    return out?.Attributes ? fromFileItem(out.Attributes) : undefined;
  }

  /** Marks a live, pinned file of this project deleted; its record and blob go with the last pin. */
  private async tombstonePinnedFile(project: string, id: string): Promise<FileRecord | undefined> {
    const out = await unlessConditionFails(
      this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: fileKey(id),
          UpdateExpression: 'SET deletedAtMs = :now',
          ConditionExpression: `#project = :project AND ${LIVE_FILE} AND attribute_not_exists(deletedAtMs) AND attribute_exists(pinnedBy)`,
          ExpressionAttributeNames: { '#project': 'project' },
          ExpressionAttributeValues: { ':project': project, ':now': this.now() },
          ReturnValues: 'ALL_NEW',
        }),
      ),
    );
    return out?.Attributes ? fromFileItem(out.Attributes) : undefined;
  }

  // Batches

  async createBatch(batch: BatchRecord, event?: BatchEvent): Promise<void> {
    const outbox = event ? { pendingEvents: [event], outboxPk: OUTBOX_PARTITION, outboxSk: outboxSortKey(event) } : {};
    try {
      await this.doc.send(
        new PutCommand({
          TableName: this.tableName,
          Item: { ...toBatchItem(batch), ...outbox },
          ConditionExpression: 'attribute_not_exists(pk)',
        }),
      );
    } catch (err) {
      if (isConditionalCheckFailed(err)) throw new Error(`batch ${batch.id} already exists`, { cause: err });
      throw err;
    }
  }

  async getBatch(id: string): Promise<BatchRecord | undefined> {
    const item = await this.getItem(batchKey(id));
    return item ? fromBatchItem(item) : undefined;
  }

  async listBatches(project: string, query: BatchQuery): Promise<Page<BatchRecord>> {
    let start = await this.cursorKey(query.after === undefined ? undefined : batchKey(query.after), project);
    if (start === null) return { items: [], hasMore: false };
    const { range, filter } = query.filter ? batchFilterQuery(query.filter) : {};
    if (start && range) {
      // DynamoDB refuses a start key outside the key condition's range.
      const place = cursorInRange(String(start.gsi1sk), range);
      if (place === 'empty') return { items: [], hasMore: false };
      if (place === 'top') start = undefined;
    }
    const page = await this.queryByProject({
      gsi1pk: `${project}#BATCH`,
      ascending: false,
      limit: query.limit,
      startKey: start,
      ...(range ? { range } : {}),
      ...(filter ? { filter, pageSize: FILTERED_PAGE_SIZE, maxItemsRead: MAX_FILTERED_READS } : {}),
    });
    return { items: page.items.map(fromBatchItem), hasMore: page.hasMore };
  }

  async updateBatch(id: string, from: readonly BatchStatus[], changes: StatusChanges): Promise<BatchRecord | undefined> {
    if (from.length === 0) return undefined;

    const attributes = batchAttributes(id, changes);
    if (Object.keys(attributes).length === 0) {
      // Nothing to write: a compare without a set is a consistent read.
      const batch = await this.getBatch(id);
      return batch && from.includes(batch.status) ? batch : undefined;
    }
    const item = await this.setWhileStatus(batchKey(id), from, attributes);
    return item ? fromBatchItem(item) : undefined;
  }

  async admitBatch(id: string, atMs: number): Promise<BatchRecord | undefined> {
    const out = await unlessConditionFails(
      this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: batchKey(id),
          UpdateExpression: 'SET admittedAtMs = :at',
          ConditionExpression: 'attribute_exists(pk) AND #status = :running AND attribute_not_exists(admittedAtMs)',
          ExpressionAttributeNames: { '#status': 'status' },
          ExpressionAttributeValues: { ':at': atMs, ':running': 'in_progress' },
          ReturnValues: 'ALL_NEW',
        }),
      ),
    );
    return out?.Attributes ? fromBatchItem(out.Attributes) : undefined;
  }

  async transitionBatch(id: string, change: StatusChange): Promise<BatchRecord> {
    const names: Record<string, string> = { '#status': 'status' };
    const values: Item = {
      ':from': change.from,
      ':to': change.to,
      ':event': [change.event],
      ':noEvents': [],
      ':outboxPk': OUTBOX_PARTITION,
      ':outboxSk': outboxSortKey(change.event),
    };
    const sets = [
      '#status = :to',
      // The outbox: the event is stored by the very write that changes the status, so neither can
      // happen without the other. A batch keeps its place in the outbox index while events wait.
      'pendingEvents = list_append(if_not_exists(pendingEvents, :noEvents), :event)',
      'outboxPk = :outboxPk',
      'outboxSk = if_not_exists(outboxSk, :outboxSk)',
    ];
    const changed = setClauses(batchAttributes(id, change.changes));
    Object.assign(names, changed.names);
    Object.assign(values, changed.values);
    sets.push(...changed.sets);
    const removes = TERMINAL_STATUSES.includes(change.to) ? ' REMOVE openPk, openSk' : '';
    try {
      const out = await this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: batchKey(id),
          UpdateExpression: `SET ${sets.join(', ')}${removes}`,
          // attribute_exists: an unknown id must not become a bare item. The status compare: of two
          // racing changes (a cancel and the end of the chunks, two drivers), exactly one wins.
          ConditionExpression: 'attribute_exists(pk) AND #status = :from',
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: values,
          ReturnValues: 'ALL_NEW',
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
        }),
      );
      return fromBatchItem(out.Attributes!);
    } catch (err) {
      if (!isConditionalCheckFailed(err)) throw err;
      // DynamoDB hands back the item that failed the condition; dynalite does not, so read it.
      const current = err.Item ? fromBatchItem(unmarshall(err.Item)) : await this.getBatch(id);
      throw new BatchStatusConflict(id, current);
    }
  }

  async listPendingEvents(limit: number): Promise<PendingEvents[]> {
    const out = await this.doc.send(
      new QueryCommand({
        TableName: this.tableName,
        IndexName: OUTBOX_INDEX,
        KeyConditionExpression: 'outboxPk = :outbox',
        ExpressionAttributeValues: { ':outbox': OUTBOX_PARTITION },
        Limit: limit,
      }),
    );
    return (out.Items ?? [])
      .map((item) => ({ batch: fromBatchItem(item), events: (item.pendingEvents ?? []) as BatchEvent[] }))
      .filter((pending) => pending.events.length > 0);
  }

  async ackEvents(batchId: string, eventIds: readonly string[]): Promise<void> {
    if (eventIds.length === 0) return;
    const values = Object.fromEntries(eventIds.map((id, i) => [`:id${i}`, id]));
    const same = eventIds.map((_, i) => `pendingEvents[${i}].id = :id${i}`).join(' AND ');
    const ack = (update: string, condition: string, extra: Item = {}) =>
      unlessConditionFails(
        this.doc.send(
          new UpdateCommand({
            TableName: this.tableName,
            Key: batchKey(batchId),
            UpdateExpression: update,
            ConditionExpression: condition,
            ExpressionAttributeValues: { ...values, ...extra },
          }),
        ),
      );
    // The outbox holds exactly these: empty it and leave the index. Otherwise events came after
    // them: remove only these, the oldest. Neither matching means another dispatcher acked them.
    // attribute_exists first: size() of a missing attribute is simply false in DynamoDB, but moto fails on it.
    const emptied = await ack(
      'REMOVE pendingEvents, outboxPk, outboxSk',
      `attribute_exists(pendingEvents) AND size(pendingEvents) = :count AND ${same}`,
      {
        ':count': eventIds.length,
      },
    );
    if (emptied) return;
    await ack(`REMOVE ${eventIds.map((_, i) => `pendingEvents[${i}]`).join(', ')}`, same);
  }

  async recordChunk(batchId: string, outcome: ChunkOutcome): Promise<RecordChunkResult> {
    // A chunk's timeline: a worker runs it, records it here, and may crash before deleting its
    // message; SQS redelivers, a second worker runs it again and arrives here with the same index.
    // Meanwhile the lifecycle may have moved the batch on to finalizing, which reads the counters.
    const condition = [
      // The batch exists: UpdateItem would otherwise create a bare item holding only counters.
      'attribute_exists(pk)',
      // The chunk was not recorded before: a redelivered chunk must not count twice.
      'NOT contains(doneChunks, :chunk)',
      // The batch still takes results: once finalizing has read the counters they are final.
      '#status IN (:in_progress, :cancelling)',
    ].join(' AND ');

    try {
      const out = await this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: batchKey(batchId),
          UpdateExpression:
            'ADD doneChunks :chunkSet, completed :completed, failed :failed, unrun :unrun, ' +
            'usageInputTokens :usageInputTokens, usageCachedTokens :usageCachedTokens, ' +
            'usageOutputTokens :usageOutputTokens, usageReasoningTokens :usageReasoningTokens, ' +
            'usageTotalTokens :usageTotalTokens ' +
            'SET chunkAttempts.#chunk = :attempt',
          ConditionExpression: condition,
          ExpressionAttributeNames: { '#status': 'status', '#chunk': String(outcome.index) },
          ExpressionAttributeValues: {
            ':chunkSet': new Set([outcome.index]),
            ':chunk': outcome.index,
            ':completed': outcome.completed,
            // `failed` already includes the lines that never ran (`unrun`): not added twice.
            ':failed': outcome.failed,
            ':unrun': outcome.unrun,
            ...prefixKeys(usageAttributes(outcome.usage)),
            ':attempt': outcome.attempt,
            ':in_progress': 'in_progress',
            ':cancelling': 'cancelling',
          },
          ReturnValues: 'ALL_NEW',
          // DynamoDB hands back the item that failed the condition; dynalite ignores this, and
          // then we read the item again.
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
        }),
      );
      if (!out.Attributes) throw new Error(`recordChunk: no attributes returned for batch ${batchId}`);
      return { recorded: true, batch: fromBatchItem(out.Attributes) };
    } catch (err) {
      if (!isConditionalCheckFailed(err)) throw err;
      const current = err.Item ? rawChunkState(err.Item) : await this.chunkState(batchId);
      return { recorded: false, reason: failureReason(current, outcome.index) };
    }
  }

  async listUnfinishedBatches(project?: string): Promise<BatchRecord[]> {
    const items = await this.queryAll({
      IndexName: OPEN_INDEX,
      KeyConditionExpression: project === undefined ? 'openPk = :open' : 'openPk = :open AND begins_with(openSk, :project)',
      ExpressionAttributeValues: { ':open': OPEN_PARTITION, ...(project === undefined ? {} : { ':project': `${project}#` }) },
    });
    // The index is eventually consistent: a batch that just became final may still be in it.
    return items.map(fromBatchItem).filter((batch) => !TERMINAL_STATUSES.includes(batch.status));
  }

  /** Every item a query finds, page after page (for the short lists: unfinished batches, api keys). */
  private async queryAll(query: Omit<ConstructorParameters<typeof QueryCommand>[0], 'TableName' | 'ExclusiveStartKey'>): Promise<Item[]> {
    const items: Item[] = [];
    let startKey: Key | undefined;
    do {
      const out = await this.doc.send(new QueryCommand({ TableName: this.tableName, ...query, ExclusiveStartKey: startKey }));
      items.push(...(out.Items ?? []));
      startKey = out.LastEvaluatedKey;
    } while (startKey);
    return items;
  }

  // Uploads

  async createUpload(upload: UploadRecord): Promise<void> {
    await this.doc.send(
      new PutCommand({
        TableName: this.tableName,
        Item: { ...uploadKey(upload.id), ...upload, [TTL_ATTRIBUTE]: Math.ceil(upload.expiresAtMs / 1000) + UPLOAD_RECORD_GRACE_SECONDS },
        ConditionExpression: 'attribute_not_exists(pk)',
      }),
    );
  }

  async getUpload(project: string, id: string): Promise<UploadRecord | undefined> {
    const item = await this.getItem(uploadKey(id));
    return item && item.project === project ? fromUploadItem(item) : undefined;
  }

  async updateUpload(
    id: string,
    from: readonly UploadStatus[],
    changes: Partial<Pick<UploadRecord, 'status' | 'fileId'>>,
  ): Promise<UploadRecord | undefined> {
    const attributes = Object.fromEntries(Object.entries(changes).filter(([, value]) => value !== undefined));
    if (from.length === 0 || Object.keys(attributes).length === 0) return undefined;
    const item = await this.setWhileStatus(uploadKey(id), from, attributes);
    return item ? fromUploadItem(item) : undefined;
  }

  async claimUploadCompletion(id: string, nowMs: number, untilMs: number): Promise<UploadRecord | undefined> {
    const out = await unlessConditionFails(
      this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: uploadKey(id),
          UpdateExpression: 'SET completingUntilMs = :until',
          // A missing item has no status, so this also keeps UpdateItem from creating a bare one.
          ConditionExpression: '#status = :pending AND (attribute_not_exists(completingUntilMs) OR completingUntilMs <= :now)',
          ExpressionAttributeNames: { '#status': 'status' },
          ExpressionAttributeValues: { ':until': untilMs, ':pending': 'pending', ':now': nowMs },
          ReturnValues: 'ALL_NEW',
        }),
      ),
    );
    return out?.Attributes ? fromUploadItem(out.Attributes) : undefined;
  }

  async releaseUploadCompletion(id: string, untilMs: number): Promise<void> {
    await unlessConditionFails(
      this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: uploadKey(id),
          UpdateExpression: 'REMOVE completingUntilMs',
          ConditionExpression: 'completingUntilMs = :until',
          ExpressionAttributeValues: { ':until': untilMs },
        }),
      ),
    );
  }

  async addUploadPartBytes(id: string, bytes: number, limit: number): Promise<UploadRecord | undefined> {
    if (bytes > limit) return undefined;
    const out = await unlessConditionFails(
      this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: uploadKey(id),
          UpdateExpression: 'ADD partBytes :bytes',
          // DynamoDB conditions cannot add: "partBytes + bytes <= limit" is "partBytes <= limit - bytes".
          // Giving bytes back needs no room, only the upload (a missing item has no status).
          ConditionExpression:
            bytes > 0 ? '#status = :pending AND (attribute_not_exists(partBytes) OR partBytes <= :room)' : 'attribute_exists(#status)',
          ExpressionAttributeNames: { '#status': 'status' },
          ExpressionAttributeValues: bytes > 0 ? { ':bytes': bytes, ':pending': 'pending', ':room': limit - bytes } : { ':bytes': bytes },
          ReturnValues: 'ALL_NEW',
        }),
      ),
    );
    return out?.Attributes ? fromUploadItem(out.Attributes) : undefined;
  }

  async putUploadPart(part: UploadPartRecord): Promise<void> {
    await this.doc.send(new PutCommand({ TableName: this.tableName, Item: { ...uploadPartKey(part.uploadId, part.id), ...part } }));
  }

  async getUploadPart(uploadId: string, partId: string): Promise<UploadPartRecord | undefined> {
    const item = await this.getItem(uploadPartKey(uploadId, partId));
    if (!item) return undefined;
    return {
      id: item.id,
      uploadId: item.uploadId,
      project: item.project,
      bytes: item.bytes,
      createdAtMs: item.createdAtMs,
      blobKey: item.blobKey,
      ...(item.summary !== undefined && { summary: item.summary }),
    } as UploadPartRecord;
  }

  // Webhook endpoints

  async createWebhookEndpoint(endpoint: WebhookEndpointRecord): Promise<void> {
    await this.doc.send(
      new PutCommand({
        TableName: this.tableName,
        Item: {
          ...webhookEndpointKey(endpoint.id),
          gsi1pk: `${endpoint.project}#WEBHOOK`,
          gsi1sk: sortKey(endpoint.createdAtMs, endpoint.id),
          ...endpoint,
        },
        ConditionExpression: 'attribute_not_exists(pk)',
      }),
    );
  }

  async getWebhookEndpoint(project: string, id: string): Promise<WebhookEndpointRecord | undefined> {
    const item = await this.getItem(webhookEndpointKey(id));
    return item && item.project === project ? fromWebhookEndpointItem(item) : undefined;
  }

  async listWebhookEndpoints(project: string, query: WebhookEndpointQuery): Promise<Page<WebhookEndpointRecord>> {
    const start = await this.cursorKey(query.after === undefined ? undefined : webhookEndpointKey(query.after), project);
    if (start === null) return { items: [], hasMore: false };
    const page = await this.queryByProject({ gsi1pk: `${project}#WEBHOOK`, ascending: false, limit: query.limit, startKey: start });
    return { items: page.items.map(fromWebhookEndpointItem), hasMore: page.hasMore };
  }

  async updateWebhookEndpoint(project: string, id: string, changes: WebhookEndpointChanges): Promise<WebhookEndpointRecord | undefined> {
    const changed = setClauses(Object.fromEntries(Object.entries(changes).filter(([, value]) => value !== undefined)));
    if (changed.sets.length === 0) return this.getWebhookEndpoint(project, id);
    const out = await unlessConditionFails(
      this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: webhookEndpointKey(id),
          UpdateExpression: `SET ${changed.sets.join(', ')}`,
          // Another project's endpoint fails like a missing one, and no bare item is ever created.
          ConditionExpression: '#project = :project',
          ExpressionAttributeNames: { '#project': 'project', ...changed.names },
          ExpressionAttributeValues: { ':project': project, ...changed.values },
          ReturnValues: 'ALL_NEW',
        }),
      ),
    );
    return out?.Attributes ? fromWebhookEndpointItem(out.Attributes) : undefined;
  }

  async deleteWebhookEndpoint(project: string, id: string): Promise<WebhookEndpointRecord | undefined> {
    const out = await unlessConditionFails(
      this.doc.send(
        new DeleteCommand({
          TableName: this.tableName,
          Key: webhookEndpointKey(id),
          ConditionExpression: '#project = :project',
          ExpressionAttributeNames: { '#project': 'project' },
          ExpressionAttributeValues: { ':project': project },
          ReturnValues: 'ALL_OLD',
        }),
      ),
    );
    return out?.Attributes ? fromWebhookEndpointItem(out.Attributes) : undefined;
  }

  // Webhook deliveries

  async putWebhookDelivery(delivery: WebhookDeliveryRecord): Promise<boolean> {
    const out = await unlessConditionFails(
      this.doc.send(
        new PutCommand({
          TableName: this.tableName,
          Item: { ...webhookDeliveryKey(delivery.id), ...deliveryOutboxKeys(delivery.nextAttemptAtMs, delivery.id), ...delivery },
          // The same event taken again (the events outbox delivers at least once) is one delivery.
          ConditionExpression: 'attribute_not_exists(pk)',
        }),
      ),
    );
    return out !== undefined;
  }

  async getWebhookDelivery(id: string): Promise<WebhookDeliveryRecord | undefined> {
    const item = await this.getItem(webhookDeliveryKey(id));
    return item ? fromWebhookDeliveryItem(item) : undefined;
  }

  async listDueWebhookDeliveries(nowMs: number, limit: number, after?: WebhookDeliveryRecord): Promise<WebhookDeliveryRecord[]> {
    const out = await this.doc.send(
      new QueryCommand({
        TableName: this.tableName,
        IndexName: OUTBOX_INDEX,
        // '~' sorts after every id character: every delivery due at nowMs itself is included.
        KeyConditionExpression: 'outboxPk = :deliveries AND outboxSk <= :due',
        ExpressionAttributeValues: { ':deliveries': DELIVERIES_PARTITION, ':due': `${String(nowMs).padStart(15, '0')}#~` },
        Limit: limit,
        // A GSI's start key holds the table key and the index key, all known from the record.
        ExclusiveStartKey: after && { ...webhookDeliveryKey(after.id), ...deliveryOutboxKeys(after.nextAttemptAtMs, after.id) },
      }),
    );
    // The index is eventually consistent: the claim checks again on the item itself.
    return (out.Items ?? []).map(fromWebhookDeliveryItem);
  }

  async claimWebhookDelivery(id: string, nowMs: number, untilMs: number): Promise<WebhookDeliveryRecord | undefined> {
    const out = await unlessConditionFails(
      this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: webhookDeliveryKey(id),
          UpdateExpression: 'SET nextAttemptAtMs = :until, outboxSk = :sk',
          // Due, and so not claimed by another sender (a claim moves nextAttemptAtMs to its end);
          // a missing delivery (arrived, given up) has no nextAttemptAtMs.
          ConditionExpression: 'nextAttemptAtMs <= :now',
          ExpressionAttributeValues: { ':until': untilMs, ':sk': deliveryOutboxKeys(untilMs, id).outboxSk, ':now': nowMs },
          ReturnValues: 'ALL_NEW',
        }),
      ),
    );
    return out?.Attributes ? fromWebhookDeliveryItem(out.Attributes) : undefined;
  }

  async retryWebhookDelivery(id: string, retry: DeliveryRetry): Promise<void> {
    await unlessConditionFails(
      this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: webhookDeliveryKey(id),
          UpdateExpression: 'SET attempts = :attempts, nextAttemptAtMs = :next, outboxSk = :sk, lastError = :error',
          ConditionExpression: 'attribute_exists(pk)',
          ExpressionAttributeValues: {
            ':attempts': retry.attempts,
            ':next': retry.nextAttemptAtMs,
            ':sk': deliveryOutboxKeys(retry.nextAttemptAtMs, id).outboxSk,
            ':error': retry.lastError,
          },
        }),
      ),
    );
  }

  async finishWebhookDelivery(id: string): Promise<void> {
    await this.doc.send(new DeleteCommand({ TableName: this.tableName, Key: webhookDeliveryKey(id) }));
  }

  // API keys

  async putApiKey(key: ApiKeyRecord): Promise<void> {
    await this.doc.send(
      new PutCommand({
        TableName: this.tableName,
        // revokedAtMs stays absent until revoked, so revoking can keep the first time with if_not_exists.
        Item: {
          ...apiKeyKey(key.keyHash),
          gsi1pk: API_KEYS_INDEX_KEY,
          gsi1sk: sortKey(key.createdAtMs, key.keyHash),
          ...key,
          revokedAtMs: key.revokedAtMs ?? undefined,
        },
      }),
    );
  }

  async putSigningKey(key: SigningKeyRecord): Promise<void> {
    await this.doc.send(
      new PutCommand({
        TableName: this.tableName,
        Item: { ...signingKeyKey(key.id), id: key.id, encryptedSecret: key.encryptedSecret, createdAtMs: key.createdAtMs },
        // An id names one secret for good: a second key with the same id must not replace the first.
        ConditionExpression: 'attribute_not_exists(pk)',
      }),
    );
  }

  async getSigningKey(id: string): Promise<SigningKeyRecord | undefined> {
    const item = await this.getItem(signingKeyKey(id));
    return item
      ? { id: item.id as string, encryptedSecret: item.encryptedSecret as string, createdAtMs: item.createdAtMs as number }
      : undefined;
  }

  async getApiKey(keyHash: string): Promise<ApiKeyRecord | undefined> {
    const item = await this.getItem(apiKeyKey(keyHash));
    return item ? fromApiKeyItem(item) : undefined;
  }

  async listApiKeys(project?: string): Promise<ApiKeyRecord[]> {
    const items = await this.queryAll({
      IndexName: BY_PROJECT_INDEX,
      KeyConditionExpression: 'gsi1pk = :gsi1pk',
      FilterExpression: project === undefined ? undefined : '#project = :project',
      ExpressionAttributeNames: project === undefined ? undefined : { '#project': 'project' },
      ExpressionAttributeValues: { ':gsi1pk': API_KEYS_INDEX_KEY, ...(project === undefined ? {} : { ':project': project }) },
    });
    return items.map(fromApiKeyItem);
  }

  async revokeApiKey(keyHash: string, atMs: number): Promise<ApiKeyRecord | undefined> {
    const out = await unlessConditionFails(
      this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: apiKeyKey(keyHash),
          // A key revoked twice keeps its first revocation time.
          UpdateExpression: 'SET revokedAtMs = if_not_exists(revokedAtMs, :at)',
          ConditionExpression: 'attribute_exists(pk)',
          ExpressionAttributeValues: { ':at': atMs },
          ReturnValues: 'ALL_NEW',
        }),
      ),
    );
    return out?.Attributes ? fromApiKeyItem(out.Attributes) : undefined;
  }

  // Helpers

  /**
   * Compare-and-set: one UpdateItem that SETs `attributes` only while the item's status is one of
   * `from`. Returns the new item, or undefined when the status did not match or there is no item.
   */
  private async setWhileStatus(key: Key, from: readonly string[], attributes: Item): Promise<Item | undefined> {
    const fromValues = Object.fromEntries(from.map((status, i) => [`:from${i}`, status]));
    const changed = setClauses(attributes);
    const names: Record<string, string> = { '#status': 'status', ...changed.names };
    const values: Item = { ...fromValues, ...changed.values };
    const condition = [
      // Without it, UpdateItem would create a bare item for an unknown id.
      'attribute_exists(pk)',
      // The compare of compare-and-set: two racing on one transition (drivers; complete and cancel), only one wins.
      `#status IN (${Object.keys(fromValues).join(', ')})`,
    ].join(' AND ');
    const out = await unlessConditionFails(
      this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: key,
          UpdateExpression: `SET ${changed.sets.join(', ')}`,
          ConditionExpression: condition,
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: values,
          ReturnValues: 'ALL_NEW',
        }),
      ),
    );
    return out?.Attributes;
  }

  private async readFile(project: string, id: string, options: { includeDeleted: boolean }): Promise<FileRecord | undefined> {
    const item = await this.getItem(fileKey(id));
    if (!item || item.project !== project) return undefined;
    if (item.deletedAtMs !== undefined && !options.includeDeleted) return undefined;
    const file = fromFileItem(item);
    // A batch reads its input while it pins it, expired or not (the pin kept the record and bytes).
    if (options.includeDeleted && item.pinnedBy !== undefined) return file;
    return this.isLive(file) ? file : undefined;
  }

  private isLive(file: FileRecord): boolean {
    return file.expiresAtMs === null || file.expiresAtMs > this.now();
  }

  private async getItem(key: Key): Promise<Item | undefined> {
    const out = await this.doc.send(new GetCommand({ TableName: this.tableName, Key: key, ConsistentRead: true }));
    return out.Item;
  }

  /**
   * The ExclusiveStartKey for a page that follows the object `after`: undefined to start at the
   * beginning, null when `after` is not an object of this project. That case answers an empty
   * page (rather than the first one), so a client paging with a stale or foreign cursor stops
   * instead of looping over the same objects.
   */
  private async cursorKey(after: Key | undefined, project: string): Promise<Key | undefined | null> {
    if (after === undefined) return undefined;
    const item = await this.getItem(after);
    if (!item || item.project !== project) return null;
    // A GSI's start key holds the table key and the index key.
    return { pk: item.pk, gsi1pk: item.gsi1pk, gsi1sk: item.gsi1sk };
  }

  /**
   * Reads pages of the byProject index until `limit` items plus one (to know hasMore) pass the
   * filter, or `maxItemsRead` items were read (hasMore then says whether more remain unread).
   */
  private async queryByProject(params: {
    gsi1pk: string;
    ascending: boolean;
    limit: number;
    startKey: Key | undefined;
    /** gsi1sk BETWEEN from AND to. */
    range?: { from: string; to: string };
    filter?: { expression: string; values: Item; names?: Record<string, string> };
    /** Items a query page reads (default limit + 1). */
    pageSize?: number;
    maxItemsRead?: number;
  }): Promise<Page<Item>> {
    const items: Item[] = [];
    let startKey = params.startKey;
    let read = 0;
    const rangeValues = params.range ? { ':from': params.range.from, ':to': params.range.to } : {};
    do {
      const out = await this.doc.send(
        new QueryCommand({
          TableName: this.tableName,
          IndexName: BY_PROJECT_INDEX,
          KeyConditionExpression: params.range ? 'gsi1pk = :gsi1pk AND gsi1sk BETWEEN :from AND :to' : 'gsi1pk = :gsi1pk',
          FilterExpression: params.filter?.expression,
          // DynamoDB refuses an empty map of names.
          ExpressionAttributeNames: Object.keys(params.filter?.names ?? {}).length > 0 ? params.filter?.names : undefined,
          ExpressionAttributeValues: { ':gsi1pk': params.gsi1pk, ...rangeValues, ...params.filter?.values },
          ScanIndexForward: params.ascending,
          // Limit counts items read before the filter; the loop reads on until enough pass it.
          Limit: params.pageSize ?? params.limit + 1,
          ExclusiveStartKey: startKey,
        }),
      );
      items.push(...(out.Items ?? []));
      read += out.ScannedCount ?? out.Items?.length ?? 0;
      startKey = out.LastEvaluatedKey;
    } while (startKey && items.length <= params.limit && (params.maxItemsRead === undefined || read < params.maxItemsRead));
    return { items: items.slice(0, params.limit), hasMore: items.length > params.limit || startKey !== undefined };
  }

  private async chunkState(batchId: string): Promise<ChunkState | undefined> {
    const batch = await this.getBatch(batchId);
    return batch && { status: batch.status, doneChunks: batch.doneChunks };
  }
}

function fromUploadItem(item: Item): UploadRecord {
  const i = item as unknown as UploadRecord;
  return {
    id: i.id,
    project: i.project,
    filename: i.filename,
    purpose: i.purpose,
    bytes: i.bytes,
    mimeType: i.mimeType,
    status: i.status,
    createdAtMs: i.createdAtMs,
    expiresAtMs: i.expiresAtMs,
    fileExpiresAfterSeconds: i.fileExpiresAfterSeconds ?? null,
    fileId: i.fileId ?? null,
    ...(i.completingUntilMs !== undefined && { completingUntilMs: i.completingUntilMs }),
    ...(i.partBytes !== undefined && { partBytes: i.partBytes }),
  };
}

const deliveryOutboxKeys = (atMs: number, id: string) => ({ outboxPk: DELIVERIES_PARTITION, outboxSk: sortKey(atMs, id) });

function fromWebhookEndpointItem(item: Item): WebhookEndpointRecord {
  const i = item as unknown as WebhookEndpointRecord;
  return {
    id: i.id,
    project: i.project,
    name: i.name,
    url: i.url,
    eventTypes: [...i.eventTypes],
    secret: i.secret,
    previousSecret: i.previousSecret ?? null,
    previousSecretExpiresAtMs: i.previousSecretExpiresAtMs ?? null,
    createdAtMs: i.createdAtMs,
    updatedAtMs: i.updatedAtMs,
  };
}

function fromWebhookDeliveryItem(item: Item): WebhookDeliveryRecord {
  const i = item as unknown as WebhookDeliveryRecord;
  return {
    id: i.id,
    project: i.project,
    endpointId: i.endpointId,
    eventId: i.eventId,
    eventType: i.eventType,
    payload: i.payload,
    attempts: i.attempts,
    nextAttemptAtMs: i.nextAttemptAtMs,
    createdAtMs: i.createdAtMs,
    lastError: i.lastError ?? null,
  };
}

function fromApiKeyItem(item: Item): ApiKeyRecord {
  const i = item as unknown as ApiKeyRecord;
  return { keyHash: i.keyHash, project: i.project, prefix: i.prefix, createdAtMs: i.createdAtMs, revokedAtMs: i.revokedAtMs ?? null };
}

interface ChunkState {
  status: BatchStatus;
  doneChunks: number[];
}

/** The two fields recordChunk needs, from the raw item of a ConditionalCheckFailedException. */
function rawChunkState(item: Record<string, AttributeValue>): ChunkState {
  return {
    status: item.status?.S as BatchStatus,
    doneChunks: (item.doneChunks?.NS ?? []).map(Number),
  };
}

function failureReason(state: ChunkState | undefined, index: number): 'missing' | 'duplicate' | 'closed' {
  if (!state) return 'missing';
  if (state.doneChunks.includes(index)) return 'duplicate';
  // Status is no longer in_progress or cancelling (statuses never move back, so nothing else
  // can have failed the condition).
  return 'closed';
}

/**
 * `#name = :name` for each attribute, with its placeholders: every name is one, since several of
 * ours (status, total) are DynamoDB reserved words.
 */
function setClauses(attributes: Item): { sets: string[]; names: Record<string, string>; values: Item } {
  const names: Record<string, string> = {};
  const values: Item = {};
  const sets: string[] = [];
  for (const [name, value] of Object.entries(attributes)) {
    names[`#${name}`] = name;
    values[`:${name}`] = value;
    sets.push(`#${name} = :${name}`);
  }
  return { sets, names, values };
}

function prefixKeys(values: object): Item {
  return Object.fromEntries(Object.entries(values).map(([name, value]) => [`:${name}`, value]));
}
