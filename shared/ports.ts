// The interfaces the domain needs from the world. Each has an AWS implementation
// (shared/adapters/aws) and an embedded one for `npm start` and the tests (shared/adapters/local).
import type {
  ApiKeyRecord,
  BatchRecord,
  BatchStatus,
  ChunkOutcome,
  ChunkPlanEntry,
  FileRecord,
  SigningKeyRecord,
  UploadPartRecord,
  UploadRecord,
  UploadStatus,
} from './batch/model.js';
import type { BatchEvent } from './events/model.js';
import type { WebhookDeliveryRecord, WebhookEndpointRecord } from './events/webhook-model.js';
import type { PipelineRunRecord, RunStatus } from './pipelines/model.js';
import type { Priority } from './schedule/fair-queue.js';

/** A byte range; `end` is exclusive. */
export interface ByteRange {
  start: number;
  end: number;
}

export type BlobBody = Uint8Array | string | AsyncIterable<Uint8Array>;

export class BlobNotFoundError extends Error {
  constructor(readonly key: string) {
    super(`blob not found: ${key}`);
    this.name = 'BlobNotFoundError';
  }
}

/**
 * A compare-and-set on a record's status lost: the record is no longer in the status the change was
 * made from. `current` is the record as it is now (undefined when it does not exist).
 */
export class StatusConflict<R extends { status: string }> extends Error {
  constructor(
    kind: string,
    id: string,
    readonly current: R | undefined,
  ) {
    super(current ? `${kind} ${id} is ${current.status}` : `${kind} ${id} does not exist`);
    this.name = new.target.name;
  }
}

/** A compare-and-set on a batch's status lost (MetaStore.transitionBatch). */
export class BatchStatusConflict extends StatusConflict<BatchRecord> {
  constructor(
    readonly batchId: string,
    current: BatchRecord | undefined,
  ) {
    super('batch', batchId, current);
  }
}

/** What a status change may set beside the status: never identity or the chunk bookkeeping. */
export type StatusChanges = Partial<Omit<BatchRecord, 'id' | 'project' | 'status' | 'doneChunks' | 'chunkAttempts'>>;

export interface StatusChange {
  from: BatchStatus;
  to: BatchStatus;
  changes: StatusChanges;
  /** Appended to the batch's outbox in the same write. */
  event: BatchEvent;
}

/** A batch whose outbox holds events not yet acknowledged, oldest first. */
export interface PendingEvents {
  batch: BatchRecord;
  events: BatchEvent[];
}

export interface ConcatOptions {
  /** The parts' sizes, when the caller knows them: S3 then joins large parts in parallel. */
  sizes?: number[];
  /** The joined object is stored only once this resolves; if it rejects, nothing is, and concat rejects with it. */
  gate?: Promise<unknown>;
}

/** Object storage: S3 in AWS, the filesystem locally. Bodies stream in both directions. */
export interface BlobStore {
  /** Stores `body` under `key`, replacing what was there. Readers never see a partial object. */
  put(key: string, body: BlobBody): Promise<{ bytes: number }>;
  /** Streams an object, or the bytes [start, end) of it. Throws BlobNotFoundError. */
  get(key: string, range?: ByteRange): Promise<AsyncIterable<Uint8Array>>;
  /** Size in bytes, or undefined when there is no such object. */
  size(key: string): Promise<number | undefined>;
  /** Joins `parts` in order into one object under `key`, streaming (multipart assemble on S3). */
  concat(key: string, parts: string[], options?: ConcatOptions): Promise<{ bytes: number }>;
  /** Deletes objects; missing ones are ignored. */
  delete(keys: string[]): Promise<void>;
  /** Keys that start with `prefix`, in lexicographic order. */
  list(prefix: string): Promise<string[]>;
  /** A short-lived URL that serves the object without our credentials, where the backend has one. */
  presignGet?(key: string, options: { expiresInSeconds: number; filename: string }): Promise<string>;
}

export interface Page<T> {
  items: T[];
  hasMore: boolean;
}

export interface FileQuery {
  purpose?: string;
  limit: number;
  order: 'asc' | 'desc';
  /** The id of the last object of the previous page. */
  after?: string;
}

/** Which of a project's batches a list answers (DashScope's list filters); every field narrows it. */
export interface BatchFilter {
  /** Created at or after this instant. */
  createdAfterMs?: number;
  /** Created at or before this instant. */
  createdBeforeMs?: number;
  /** In one of these statuses. */
  statuses?: readonly BatchStatus[];
  /** Reading one of these input files. */
  inputFileIds?: readonly string[];
  /** Whose metadata value under `key` contains `text` (case-sensitive). */
  metadataContains?: { key: string; text: string };
}

export interface BatchQuery {
  limit: number;
  after?: string;
  filter?: BatchFilter;
}

export interface WebhookEndpointQuery {
  limit: number;
  /** The id of the last endpoint of the previous page. */
  after?: string;
}

/** What an update of an endpoint may change (identity and creation never). */
export type WebhookEndpointChanges = Partial<
  Pick<WebhookEndpointRecord, 'name' | 'url' | 'eventTypes' | 'secret' | 'previousSecret' | 'previousSecretExpiresAtMs' | 'updatedAtMs'>
>;

/** What an attempt that failed leaves on its delivery. */
export interface DeliveryRetry {
  attempts: number;
  nextAttemptAtMs: number;
  lastError: string;
}

/** A file record as expiry removed it (a DynamoDB stream's old image), with what pinned it then. */
export interface RemovedFile {
  file: FileRecord;
  pinnedBy: string[];
  /** Set when the user had deleted the file while it was pinned. */
  deletedAtMs?: number;
}

export interface DeletedFile {
  file: FileRecord;
  /** An unfinished batch still reads the file: its blob must stay. */
  blobInUse: boolean;
}

export type RecordChunkResult =
  | { recorded: true; batch: BatchRecord }
  /** `duplicate`: this chunk was recorded before. `closed`: the batch no longer takes results. */
  | { recorded: false; reason: 'duplicate' | 'closed' | 'missing' };

/** Records of files and batches: DynamoDB in AWS (and locally, on an embedded DynamoDB). */
export interface MetaStore {
  putFile(file: FileRecord): Promise<void>;
  /**
   * A file of this project; another project's file is undefined, exactly like a missing one, and
   * so is an expired or deleted one.
   */
  getFile(project: string, id: string): Promise<FileRecord | undefined>;
  /**
   * The input file as its batch reads it: like getFile, but also once the user has deleted it, or it
   * has expired, while batches pin it. For the batch steps, never for the API.
   */
  getInputFile(project: string, id: string): Promise<FileRecord | undefined>;
  /** Newest first for order 'desc'. */
  listFiles(project: string, query: FileQuery): Promise<Page<FileRecord>>;
  /**
   * Deletes a file of this project for its user, or answers undefined when this project has no such
   * live file. A file no unfinished batch pins is removed at once (the caller then deletes its blob);
   * a pinned one is only marked deleted (`blobInUse`: the caller keeps its blob) and is removed when
   * its last pin goes (unpinFile).
   */
  deleteFile(project: string, id: string): Promise<DeletedFile | undefined>;
  /**
   * Marks the file as read by the batch `batchId`, so a delete keeps its bytes until the batch is
   * final, and so does its expiry: the record is kept (DynamoDB TTL) until at least `keepUntilMs`,
   * the batch's latest possible end. Only a live, not deleted file of this project can be pinned:
   * otherwise undefined.
   */
  pinFile(project: string, id: string, batchId: string, keepUntilMs?: number): Promise<FileRecord | undefined>;
  /**
   * Removes the batch's pin (again is harmless). Returns the file when that leaves it deleted and
   * unpinned: the caller deletes its blob, then calls purgeDeletedFile.
   */
  unpinFile(id: string, batchId: string): Promise<FileRecord | undefined>;
  /** Removes the record of a file that is deleted and no longer pinned; anything else stays. */
  purgeDeletedFile(id: string): Promise<void>;
  /**
   * Files past their expiry that no batch pins, up to `limit`: for a runtime without TTL (`npm
   * start` on dynalite), whose file sweep deletes them. AWS's TTL and the file reaper do it there.
   */
  listExpiredFiles(nowMs: number, limit: number): Promise<FileRecord[]>;
  /** Removes the record of a file expired at `nowMs` that no batch pins; false when it is not such a file. */
  deleteExpiredFile(id: string, nowMs: number): Promise<boolean>;
  /**
   * Puts back the record of a file that expiry removed while batches still pinned it, with those
   * pins, kept until `keepUntilMs` (AWS: the TTL removed it before its batches ended).
   */
  restoreFile(removed: RemovedFile, keepUntilMs: number): Promise<void>;

  /** Creates a batch, with its first event in its outbox; fails if the id exists. */
  createBatch(batch: BatchRecord, event?: BatchEvent): Promise<void>;
  /** Any project's batch: for the workers and the lifecycle, never for the API. */
  getBatch(id: string): Promise<BatchRecord | undefined>;
  /** Newest first. */
  listBatches(project: string, query: BatchQuery): Promise<Page<BatchRecord>>;
  /**
   * Applies `changes` (never the status: that is transitionBatch's) only while the batch's status is
   * one of `from`. Returns the updated batch, or undefined when the status did not match.
   */
  updateBatch(id: string, from: readonly BatchStatus[], changes: StatusChanges): Promise<BatchRecord | undefined>;
  /**
   * Marks an `in_progress` batch admitted at `atMs` (its chunks may go on the queue), once: of two
   * that race, one gets the batch back; the other, and any call on a batch already admitted or no
   * longer running, gets undefined.
   */
  admitBatch(id: string, atMs: number): Promise<BatchRecord | undefined>;
  /**
   * Compare-and-set on the status (shared/batch/transitions.ts decides which moves are allowed):
   * from `change.from` to `change.to`, applying `change.changes` and appending `change.event` to
   * the batch's outbox, all in one write. Throws BatchStatusConflict when the batch is not in
   * `change.from` (or is missing).
   */
  transitionBatch(id: string, change: StatusChange): Promise<BatchRecord>;
  /** Batches with unacknowledged events, up to `limit` of them (oldest first, roughly). */
  listPendingEvents(limit: number): Promise<PendingEvents[]>;
  /** Removes these events (the oldest of the batch's outbox) once every subscriber has them. */
  ackEvents(batchId: string, eventIds: readonly string[]): Promise<void>;
  /**
   * Adds a chunk's counts and usage to its batch and marks the chunk done, in one atomic step,
   * only if the chunk is not done yet and the batch is in_progress or cancelling.
   * A redelivered chunk therefore never counts twice.
   */
  recordChunk(batchId: string, outcome: ChunkOutcome): Promise<RecordChunkResult>;
  /**
   * Batches that are not in a terminal state, of one project or across projects (for resuming after
   * a restart, sweeps and quotas), oldest first.
   */
  listUnfinishedBatches(project?: string): Promise<BatchRecord[]>;

  createUpload(upload: UploadRecord): Promise<void>;
  /** An upload of this project, or undefined (another project's upload looks missing). */
  getUpload(project: string, id: string): Promise<UploadRecord | undefined>;
  /** Compare-and-set on the upload's status, like updateBatch. */
  updateUpload(
    id: string,
    from: readonly UploadStatus[],
    changes: Partial<Pick<UploadRecord, 'status' | 'fileId'>>,
  ): Promise<UploadRecord | undefined>;
  /**
   * Claims a pending upload for one complete's join, until `untilMs`: only while no other claim
   * holds at `nowMs`. Returns the claimed upload, or undefined when it is not pending (or missing)
   * or another claim still holds.
   */
  claimUploadCompletion(id: string, nowMs: number, untilMs: number): Promise<UploadRecord | undefined>;
  /** Gives up the claim made until `untilMs`, if it is still that one (a later claim stays). */
  releaseUploadCompletion(id: string, untilMs: number): Promise<void>;
  /**
   * Counts a part's `bytes` toward a pending upload's partBytes, only while they stay within
   * `limit`: one conditional write, so parts sent in parallel cannot pass it together. Returns the
   * upload as counted, or undefined when it is not pending (or missing) or the part does not fit.
   * A negative `bytes` gives a count back (a part that could not be recorded after all).
   */
  addUploadPartBytes(id: string, bytes: number, limit: number): Promise<UploadRecord | undefined>;
  putUploadPart(part: UploadPartRecord): Promise<void>;
  /** A part of this upload, or undefined. */
  getUploadPart(uploadId: string, partId: string): Promise<UploadPartRecord | undefined>;

  /** Stores a new endpoint; fails if the id exists. */
  createWebhookEndpoint(endpoint: WebhookEndpointRecord): Promise<void>;
  /** An endpoint of this project, or undefined (another project's endpoint looks missing). */
  getWebhookEndpoint(project: string, id: string): Promise<WebhookEndpointRecord | undefined>;
  /** Newest first. */
  listWebhookEndpoints(project: string, query: WebhookEndpointQuery): Promise<Page<WebhookEndpointRecord>>;
  /** Applies `changes` to an endpoint of this project; undefined when it has none with this id. */
  updateWebhookEndpoint(project: string, id: string, changes: WebhookEndpointChanges): Promise<WebhookEndpointRecord | undefined>;
  /** Deletes an endpoint of this project and answers it; undefined when it has none with this id. */
  deleteWebhookEndpoint(project: string, id: string): Promise<WebhookEndpointRecord | undefined>;

  /** Records a delivery in the delivery outbox; false (and nothing changes) when its id is there already. */
  putWebhookDelivery(delivery: WebhookDeliveryRecord): Promise<boolean>;
  getWebhookDelivery(id: string): Promise<WebhookDeliveryRecord | undefined>;
  /**
   * Deliveries due at `nowMs` (nextAttemptAtMs <= nowMs), the longest due first, up to `limit`;
   * `after`: the last delivery of the previous page, to read on past it.
   */
  listDueWebhookDeliveries(nowMs: number, limit: number, after?: WebhookDeliveryRecord): Promise<WebhookDeliveryRecord[]>;
  /**
   * Claims a due delivery for one attempt until `untilMs`: only while it is still due at `nowMs`,
   * so two senders never make the same attempt. Returns it as claimed, or undefined.
   */
  claimWebhookDelivery(id: string, nowMs: number, untilMs: number): Promise<WebhookDeliveryRecord | undefined>;
  /** Records a failed attempt and when the next is due. */
  retryWebhookDelivery(id: string, retry: DeliveryRetry): Promise<void>;
  /** Removes a delivery that arrived or was given up (again is harmless). */
  finishWebhookDelivery(id: string): Promise<void>;

  putApiKey(key: ApiKeyRecord): Promise<void>;
  /** Stores the encrypted secret of a signed key; fails if its id exists. */
  putSigningKey(key: SigningKeyRecord): Promise<void>;
  /** The signing key with this id, or undefined. */
  getSigningKey(id: string): Promise<SigningKeyRecord | undefined>;
  /** The key with this hash, revoked or not, or undefined. */
  getApiKey(keyHash: string): Promise<ApiKeyRecord | undefined>;
  listApiKeys(project?: string): Promise<ApiKeyRecord[]>;
  /** Marks a key revoked; returns it, or undefined when there is no such key. */
  revokeApiKey(keyHash: string, atMs: number): Promise<ApiKeyRecord | undefined>;
}

/** One unit of work: a chunk of a batch's input file. */
export interface ChunkMessage {
  batchId: string;
  inputBlobKey: string;
  chunk: ChunkPlanEntry;
  /** The batch's project and priority, for the fair turns (absent on messages of older versions). */
  project?: string;
  priority?: Priority;
}

/** At-least-once delivery of chunk messages: SQS in AWS, an in-process queue locally. */
export interface WorkQueue {
  /**
   * `delayMs`: the messages become deliverable only after this long (SQS's DelaySeconds, in whole
   * seconds up to 15 minutes): a worker hands a chunk it ran out of time for back this way.
   */
  enqueue(messages: ChunkMessage[], options?: { delayMs?: number }): Promise<void>;
}

/**
 * What drives a batch, as its Lifecycle sees it: `running` (an execution, or the local driver, holds
 * it), `ended` (its execution is over), `none` (never started, or its start was lost).
 */
export type LifecycleState = 'running' | 'ended' | 'none';

/** The batch's state machine: Step Functions in AWS, a local driver of the same steps. */
export interface Lifecycle {
  /** Starts validating a newly created batch. Idempotent: a second start is the same execution. */
  start(batchId: string): Promise<void>;
  /** The last chunk's outcome has been recorded. */
  allChunksDone(batchId: string): Promise<void>;
  /**
   * The batch is now `cancelling`; `batch` is the record as the cancel's compare-and-set left it,
   * so the signal goes to the wait that was current then, never to one that started after it.
   */
  cancelled(batch: BatchRecord): Promise<void>;
  /** Whether anything drives the batch: the start sweep starts again a `validating` batch that has nothing. */
  state(batchId: string): Promise<LifecycleState>;
}

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** One status change as the event bus carries it (EventBridge in AWS; nothing locally). */
export interface BusEvent {
  /** The batch event's id, so that a consumer tells a repeat apart. */
  id: string;
  atMs: number;
  detail: Record<string, unknown>;
}

/** Publishes status changes for anything in the account to route (EventBridge rules). */
export interface EventBus {
  publish(events: readonly BusEvent[]): Promise<void>;
}

/** Where webhook deliveries wait for their sender in AWS (an SQS queue feeding the delivery function). */
export interface DeliveryQueue {
  /** Asks for an attempt at each delivery at `atMs` or soon after (a queue may cap how far ahead). */
  schedule(deliveries: readonly { id: string; atMs: number }[], nowMs: number): Promise<void>;
}

/** Pipeline runs (shared/pipelines): DynamoDB in AWS (and locally on the embedded DynamoDB), beside the MetaStore's items. */
export interface PipelineRunStore {
  /** Records a new run; answers the run already recorded under its id instead (and writes nothing) when there is one. */
  createRun(run: PipelineRunRecord): Promise<{ created: true; run: PipelineRunRecord } | { created: false; run: PipelineRunRecord }>;
  getRun(id: string): Promise<PipelineRunRecord | undefined>;
  /**
   * Takes over an importing run whose claim lapsed at `nowMs` (its importer died), claiming it until
   * `untilMs`; undefined when the run is not importing or its claim still holds.
   */
  takeOverRun(id: string, nowMs: number, untilMs: number): Promise<PipelineRunRecord | undefined>;
  /** Applies `changes` only while the run's status is one of `from`; undefined when it is not. */
  updateRun(id: string, from: readonly RunStatus[], changes: PipelineRunChanges): Promise<PipelineRunRecord | undefined>;
  /** A pipeline's runs, newest first; `after`: the last run id of the previous page. */
  listRuns(project: string, pipeline: string, query: { limit: number; after?: string }): Promise<Page<PipelineRunRecord>>;
}

export type PipelineRunChanges = Partial<
  Pick<PipelineRunRecord, 'status' | 'batchId' | 'inputFileId' | 'error' | 'claimUntilMs' | 'deliveryAttempts' | 'updatedAtMs'>
>;

/** Where a pipeline's destination writes that failed every retry are parked for an operator (SQS with an alarm in AWS). */
export interface DeadLetters {
  park(message: Record<string, unknown>): Promise<void>;
}

/** What a batch holds of a quota: its requests and its estimated tokens. */
export interface QuotaAmount {
  requests: number;
  tokens: number;
}

/** A quota counter's limits; an absent one is no limit. */
export interface QuotaLimits {
  requests?: number;
  tokens?: number;
}

/** A quota counter as it stands: what its holders hold together, and who they are. */
export interface QuotaUsage extends QuotaAmount {
  holders: string[];
}

/**
 * Counters of what is enqueued against a quota (a project's, or a project's on one route), in the
 * MetaStore's table: each batch takes its amount once and gives it back once, by conditional
 * writes, so a step that runs again or two batches racing for the last room never count wrong.
 */
export interface QuotaStore {
  /**
   * Adds `amount` for `holder` only while the counter stays within `limits` and the holder holds
   * nothing yet: `taken`; `held` when the holder already holds (a step that ran again); `full`
   * (nothing changes) when it does not fit.
   */
  takeQuota(key: string, holder: string, amount: QuotaAmount, limits: QuotaLimits): Promise<'taken' | 'held' | 'full'>;
  /** Gives back what `holder` took (false, and nothing changes, when it holds nothing: again is harmless). */
  returnQuota(key: string, holder: string, amount: QuotaAmount): Promise<boolean>;
  getQuota(key: string): Promise<QuotaUsage | undefined>;
}
