// Creating a batch: the one way a batch comes to be, whoever asks (the API, a pipeline run, a retry).
// The request was checked for shape at the edge; this checks it against what is stored, pins the
// input file, records the batch with its first event, and starts its lifecycle.
import { batchEvent } from '../events/model.js';
import { newBatchId } from '../ids.js';
import { errorMessage, type Logger } from '../log.js';
import type { BlobStore, Clock, Lifecycle, MetaStore } from '../ports.js';
import { estimateNewBatch } from '../schedule/eta.js';
import type { Priority } from '../schedule/fair-queue.js';
import { estimatedTokensOf, type QuotaConfig, quotaCounters, tooLargeForQuota } from '../schedule/quota.js';
import { pinKeepUntilMs } from './file-expiry.js';
import { releaseInputFile } from './input-file.js';
import { type BatchDialect, type BatchRecord, ZERO_USAGE } from './model.js';

export interface CreateBatchRequest {
  project: string;
  inputFileId: string;
  /** As the client wrote it (a /v4 path stays /v4 on the Batch object). */
  endpoint: string;
  /** As the client wrote it, already checked (e.g. "24h"); `windowMs` is its length. */
  completionWindow: string;
  windowMs: number;
  metadata: Record<string, string> | null;
  outputExpiresAfterSeconds: number | null;
  /** The batch whose failed lines this one runs again (a retry). */
  retryOf?: string;
  /** The new batch's id, when the caller derives it (a retry's); otherwise a random one. */
  id?: string;
  /** Its share of the project's turns; absent: normal. */
  priority?: Priority;
  /** Create it even when its estimated end is past its window (x_run_anyway). */
  runAnyway?: boolean;
  dialect?: BatchDialect;
  autoDeleteInputFile?: boolean;
}

export interface CreateDeps {
  meta: MetaStore;
  blobs: BlobStore;
  clock: Pick<Clock, 'now'>;
  lifecycle: Pick<Lifecycle, 'start'>;
  onTransition?: (batch: BatchRecord) => void;
  log?: Logger;
  /** The quotas a create checks the batch against (a batch larger than one is refused). */
  quotaConfig?: QuotaConfig;
  /** The route that serves a model (its quotas apply too), as validation will find it. */
  routeOf?: (model: string) => string | undefined;
}

/** The input file is not a live file of the project (another project's file looks exactly the same). */
export class InputFileNotFound extends Error {
  constructor(readonly fileId: string) {
    super(`No file found with id '${fileId}'.`);
    this.name = 'InputFileNotFound';
  }
}

/** The input file is not a Batch API input file. */
export class InputFileNotForBatch extends Error {
  constructor(
    readonly fileId: string,
    readonly purpose: string,
  ) {
    super(`The input file must have purpose 'batch'; ${fileId} has purpose '${purpose}'.`);
    this.name = 'InputFileNotForBatch';
  }
}

/** The batch is larger than one of its project's quotas by itself: it could never run. */
export class BatchOverQuota extends Error {
  override name = 'BatchOverQuota';
}

/** The batch's estimated end is already past its completion window. */
export class WindowCannotBeMet extends Error {
  override name = 'WindowCannotBeMet';
  constructor(
    readonly estimatedAtMs: number,
    readonly windowEndsAtMs: number,
    nowMs: number,
  ) {
    super(
      `At this project's current rate the batch would end around ${new Date(estimatedAtMs).toISOString()} (in about ${Math.ceil((estimatedAtMs - nowMs) / 1000)} s), after its completion window ends at ${new Date(windowEndsAtMs).toISOString()}. Give a longer completion_window, or set x_run_anyway: true to run it anyway.`,
    );
  }
}

export async function createBatch(deps: CreateDeps, request: CreateBatchRequest): Promise<BatchRecord> {
  const { meta, clock } = deps;
  const input = await meta.getFile(request.project, request.inputFileId);
  if (!input) throw new InputFileNotFound(request.inputFileId);
  if (input.purpose !== 'batch') throw new InputFileNotForBatch(input.id, input.purpose);
  // The project's quotas, and its route's by the model of the file's first request, with the
  // file's counts (validation checks again with what every line says).
  if (deps.quotaConfig) {
    const amount = { requests: input.requests ?? 0, tokens: estimatedTokensOf(input.bytes) };
    const route = input.model === undefined ? undefined : deps.routeOf?.(input.model);
    const tooLarge = tooLargeForQuota(quotaCounters(deps.quotaConfig, request.project, route), amount);
    if (tooLarge) throw new BatchOverQuota(tooLarge);
  }
  // Refused when the project's measured rate says the window cannot be met (unless asked to run anyway).
  if (!request.runAnyway && input.requests) {
    const now = clock.now();
    const eta = estimateNewBatch(input.requests, await meta.listUnfinishedBatches(request.project), now);
    if (eta !== undefined && eta > now + request.windowMs) throw new WindowCannotBeMet(eta, now + request.windowMs, now);
  }
  const id = request.id ?? newBatchId();
  const now = clock.now();
  const batch = newBatchRecord(id, request, now);
  // Keeps the file's bytes for this batch, should the user delete the file, or the file expire,
  // before the batch ends.
  if (!(await meta.pinFile(request.project, input.id, id, pinKeepUntilMs(batch)))) throw new InputFileNotFound(request.inputFileId);
  try {
    await meta.createBatch(batch, batchEvent(batch, 'validating', null, now));
  } catch (error) {
    await releaseInputFile(deps, batch).catch(() => undefined);
    throw error;
  }
  deps.onTransition?.(batch);
  try {
    await deps.lifecycle.start(batch.id);
  } catch (error) {
    // The batch exists: answering an error would have the client create a second one. The start
    // (tried a few times already) is the start sweep's now (start-sweep.ts).
    deps.log?.log('error', 'the batch was created but its lifecycle did not start; the start sweep will start it', {
      batchId: batch.id,
      error: errorMessage(error),
    });
  }
  return batch;
}

function newBatchRecord(id: string, request: CreateBatchRequest, now: number): BatchRecord {
  return {
    id,
    project: request.project,
    endpoint: request.endpoint,
    inputFileId: request.inputFileId,
    completionWindow: request.completionWindow,
    status: 'validating',
    model: null,
    metadata: request.metadata,
    outputExpiresAfterSeconds: request.outputExpiresAfterSeconds,
    errors: null,
    outputFileId: null,
    errorFileId: null,
    createdAtMs: now,
    expiresAtMs: now + request.windowMs,
    inProgressAtMs: null,
    finalizingAtMs: null,
    completedAtMs: null,
    failedAtMs: null,
    expiredAtMs: null,
    cancellingAtMs: null,
    cancelledAtMs: null,
    total: 0,
    completed: 0,
    failed: 0,
    unrun: 0,
    usage: ZERO_USAGE,
    taskToken: null,
    chunkCount: 0,
    doneChunks: [],
    chunkAttempts: {},
    ...(request.retryOf ? { retryOf: request.retryOf } : {}),
    ...(request.priority && request.priority !== 'normal' ? { priority: request.priority } : {}),
    ...(request.dialect ? { dialect: request.dialect } : {}),
    ...(request.autoDeleteInputFile ? { autoDeleteInputFile: true } : {}),
  };
}
