// The steps of a batch's lifecycle: validate, enqueue, finalize, and fail (a step that failed for
// good ends the batch `failed`, so no batch is ever left in a status nothing will move it from).
// The Step Functions state machine (AWS) and the local driver call these same functions. Each is
// idempotent: it may run again after a crash or a retry and the batch ends the same.
import { createHash } from 'node:crypto';
import { readChunkRequests } from '../input/chunk-reader.js';
import { cutToBytes, QUOTE_BYTES } from '../input/request-line.js';
import { validateBatchInput } from '../input/validate.js';
import { moreErrorsNotice } from '../input/validation-errors.js';
import { errorMessage, type Logger } from '../log.js';
import type { BlobStore, Clock, MetaStore, WorkQueue } from '../ports.js';
import type { UpstreamRouter } from '../upstream/types.js';
import { type CheckpointedLine, checkpointLines, listCheckpoints, summarize } from '../work/checkpoints.js';
import { linesBody } from '../work/line-writer.js';
import { releaseInputFile } from './input-file.js';
import { blobKeys } from './keys.js';
import {
  BATCH_STATUSES,
  type BatchLineError,
  type BatchRecord,
  type BatchStatus,
  type ChunkPlanEntry,
  type FileRecord,
  TERMINAL_STATUSES,
  ZERO_USAGE,
} from './model.js';
import { addUsage, type UnrunReason, unrunLine } from './results.js';

export interface StepDeps {
  meta: MetaStore;
  blobs: BlobStore;
  queue: WorkQueue;
  upstreams: UpstreamRouter;
  clock: Clock;
  log: Logger;
  limits: { maxRequestsPerBatch: number; maxLineBytes: number; maxErrors?: number };
  chunking: { maxRequests: number; maxBytes: number };
}

/** The chunk plan of a batch, kept in the BlobStore: plans of huge batches outgrow a DynamoDB item. */
export interface StoredPlan {
  batchId: string;
  inputBlobKey: string;
  chunks: ChunkPlanEntry[];
}

const DEFAULT_OUTPUT_RETENTION_SECONDS = 30 * 24 * 3600;

export async function readPlan(blobs: BlobStore, batchId: string): Promise<StoredPlan | undefined> {
  if ((await blobs.size(blobKeys.plan(batchId))) === undefined) return undefined;
  const pieces: Buffer[] = [];
  for await (const piece of await blobs.get(blobKeys.plan(batchId))) pieces.push(Buffer.from(piece));
  return JSON.parse(Buffer.concat(pieces).toString('utf8')) as StoredPlan;
}

/**
 * Why validation fails a batch: the errors its record holds and, when the file has more, every
 * error validation kept (written to the batch's error file) and how many it found.
 */
interface ValidationFailure {
  errors: BatchLineError[];
  total?: number;
  reportedErrors?: BatchLineError[];
  errorCount?: number;
  errorCountIsExact?: boolean;
}

/**
 * Ends a validating batch `failed`. Errors the record cannot hold go to an error file (one
 * BatchError object a line), and the record's list ends with a notice of how many there are.
 */
async function failWith(deps: StepDeps, batch: BatchRecord, failure: ValidationFailure) {
  const { errors, total = 0 } = failure;
  const reported = failure.reportedErrors ?? errors;
  const found = { count: failure.errorCount ?? errors.length, exact: failure.errorCountIsExact ?? true };
  let errorFile: FileRecord | undefined;
  if (reported.length > errors.length) {
    // The id depends only on the batch: a step that runs again writes the same file.
    const id = derivedFileId(batch.id, 'error');
    const blobKey = blobKeys.file(id);
    const { bytes } = await deps.blobs.put(blobKey, reported.map((error) => `${JSON.stringify(error)}\n`).join(''));
    const now = deps.clock.now();
    const retentionSeconds = batch.outputExpiresAfterSeconds ?? DEFAULT_OUTPUT_RETENTION_SECONDS;
    errorFile = {
      id,
      project: batch.project,
      filename: `${batch.id}_error.jsonl`,
      purpose: 'batch_output',
      bytes,
      createdAtMs: now,
      expiresAtMs: now + retentionSeconds * 1_000,
      blobKey,
    };
    await deps.meta.putFile(errorFile);
  }
  const listed =
    found.count > errors.length
      ? [...errors, moreErrorsNotice(errors.length, found, errorFile && { id: errorFile.id, errors: reported.length })]
      : errors;
  const failed = await deps.meta.updateBatch(batch.id, ['validating'], {
    status: 'failed',
    errors: listed,
    errorFileId: errorFile?.id ?? null,
    total,
    failedAtMs: deps.clock.now(),
  });
  if (failed) {
    await releaseInputFile(deps, failed);
  } else if (errorFile && (await deps.meta.getBatch(batch.id))?.errorFileId !== errorFile.id) {
    // The batch left validating another way (a cancel): its error file serves nobody.
    await deps.meta.deleteFile(batch.project, errorFile.id);
    await deps.blobs.delete([errorFile.blobKey]);
  }
  return failed;
}

/** Reads the whole input file once, as a stream; ends `failed` with every bad line, or plans the chunks and starts the batch. */
export async function validateStep(deps: StepDeps, batchId: string): Promise<BatchStatus | undefined> {
  const batch = await deps.meta.getBatch(batchId);
  if (batch?.status !== 'validating') {
    if (batch && TERMINAL_STATUSES.includes(batch.status)) await releaseInputFile(deps, batch);
    return batch?.status;
  }

  // Still readable if the user deleted it after creating the batch: the batch's pin keeps it.
  const file = await deps.meta.getInputFile(batch.project, batch.inputFileId);
  if (!file) {
    const message = `The input file ${batch.inputFileId} no longer exists.`;
    const errors = [{ code: 'input_file_not_found', message, param: 'input_file_id', line: null }];
    return (await failWith(deps, batch, { errors }))?.status;
  }
  const result = await validateBatchInput(await deps.blobs.get(file.blobKey), {
    endpoint: batch.endpoint,
    maxRequests: deps.limits.maxRequestsPerBatch,
    maxLineBytes: deps.limits.maxLineBytes,
    maxErrors: deps.limits.maxErrors ?? 1_000,
    chunkMaxRequests: deps.chunking.maxRequests,
    chunkMaxBytes: deps.chunking.maxBytes,
    // Only when custom_id hashes repeat: the suspected duplicates are confirmed by reading again.
    reread: () => deps.blobs.get(file.blobKey),
  });
  if (!result.ok) return (await failWith(deps, batch, result))?.status;
  if (!deps.upstreams.route(result.model)) {
    const model = cutToBytes(result.model, QUOTE_BYTES);
    const message = `No upstream is configured for the model ${model}. Set UPSTREAM_BASE_URL, or use batch-test-model for a dry run.`;
    const errors = [{ code: 'model_not_found', message, param: 'body.model', line: null }];
    return (await failWith(deps, batch, { errors, total: result.total }))?.status;
  }

  const plan: StoredPlan = { batchId, inputBlobKey: file.blobKey, chunks: result.chunks };
  await deps.blobs.put(blobKeys.plan(batchId), JSON.stringify(plan));
  const started = await deps.meta.updateBatch(batchId, ['validating'], {
    status: 'in_progress',
    model: result.model,
    total: result.total,
    chunkCount: result.chunks.length,
    inProgressAtMs: deps.clock.now(),
  });
  deps.log.log('info', 'batch validated', { batchId, requests: result.total, chunks: result.chunks.length });
  return started?.status ?? (await deps.meta.getBatch(batchId))?.status;
}

/** Sends a message for every chunk that has no recorded outcome yet. */
export async function enqueueStep(deps: StepDeps, batchId: string): Promise<number> {
  const [batch, plan] = await Promise.all([deps.meta.getBatch(batchId), readPlan(deps.blobs, batchId)]);
  if (!batch || !plan || !['in_progress', 'cancelling'].includes(batch.status)) return 0;
  const done = new Set(batch.doneChunks);
  const messages = plan.chunks
    .filter((chunk) => !done.has(chunk.index))
    .map((chunk) => ({ batchId, inputBlobKey: plan.inputBlobKey, chunk }));
  await deps.queue.enqueue(messages);
  return messages.length;
}

/** An id that depends only on the batch, so a finalization that runs twice makes the same files. */
export function derivedFileId(batchId: string, kind: 'output' | 'error'): string {
  const digest = createHash('sha256').update(`${batchId}:${kind}`).digest('base64url').replace(/[-_]/g, '');
  return `file-${digest.slice(0, 24)}`;
}

/** The timestamp of the status a finalization ends in. */
function endedAt(status: BatchStatus, now: number): Partial<BatchRecord> {
  if (status === 'cancelled') return { cancelledAtMs: now };
  if (status === 'failed') return { failedAtMs: now };
  if (status === 'expired') return { expiredAtMs: now };
  return { completedAtMs: now };
}

/**
 * Stops taking chunk results, then merges the recorded chunks' objects into one output file and
 * one error file, streaming. A chunk with no recorded outcome keeps the lines its worker had
 * checkpointed (output or error, as they were, counted now); each of its other lines goes to the
 * error file as batch_cancelled, batch_failed or batch_expired, so every custom_id appears exactly
 * once. Nothing joins a chunk's lines: every object is written as a stream of lines.
 */
export async function finalizeStep(deps: StepDeps, batchId: string): Promise<BatchStatus | undefined> {
  const { meta, blobs, clock } = deps;
  let batch = await meta.getBatch(batchId);
  if (!batch) return undefined;
  if (TERMINAL_STATUSES.includes(batch.status)) {
    await releaseInputFile(deps, batch);
    return batch.status;
  }
  if (batch.status === 'validating') return batch.status;
  if (batch.status !== 'finalizing') {
    batch = await meta.updateBatch(batchId, [batch.status], { status: 'finalizing', finalizingAtMs: clock.now() });
    if (!batch) return finalizeStep(deps, batchId);
  }

  const cancelled = batch.cancellingAtMs !== null;
  // A running batch has errors only when it is to end failed: a chunk was given up, or a step
  // failed for good (a failed validation sets them too, but that batch is final already).
  const failing = !cancelled && (batch.errors?.length ?? 0) > 0;
  const reason: UnrunReason = cancelled ? 'batch_cancelled' : failing ? 'batch_failed' : 'batch_expired';
  const [plan, checkpoints] = await Promise.all([readPlan(blobs, batchId), listCheckpoints(blobs, batchId)]);
  const done = new Set(batch.doneChunks);
  const outputParts: string[] = [];
  const errorParts: string[] = [];
  const scratch: string[] = [...checkpoints.values()].flat();
  let unrun = 0;
  // Lines of unrecorded chunks taken from their checkpoints: not in the batch's counts yet.
  let recovered = { completed: 0, failed: 0, usage: ZERO_USAGE };
  for (const chunk of plan?.chunks ?? []) {
    const attempt = batch.chunkAttempts[String(chunk.index)];
    if (done.has(chunk.index) && attempt) {
      outputParts.push(blobKeys.chunkOutput(batchId, chunk.index, attempt));
      errorParts.push(blobKeys.chunkErrors(batchId, chunk.index, attempt));
      continue;
    }
    const requests = await readChunkRequests(blobs, plan!.inputBlobKey, chunk);
    const finished = await accountForUnrecordedChunk(deps, batchId, chunk, requests, checkpoints.get(chunk.index) ?? [], reason, {
      outputParts,
      errorParts,
    });
    const counts = summarize(finished.values());
    recovered = {
      completed: recovered.completed + counts.completed,
      failed: recovered.failed + counts.failed,
      usage: addUsage(recovered.usage, counts.usage),
    };
    unrun += requests.length - finished.size;
  }

  const retentionSeconds = batch.outputExpiresAfterSeconds ?? DEFAULT_OUTPUT_RETENTION_SECONDS;
  const assemble = async (kind: 'output' | 'error', parts: string[]): Promise<string | null> => {
    const id = derivedFileId(batchId, kind);
    const blobKey = blobKeys.file(id);
    const { bytes } = await blobs.concat(blobKey, parts);
    if (bytes === 0) {
      await blobs.delete([blobKey]);
      return null;
    }
    const now = clock.now();
    const file: FileRecord = {
      id,
      project: batch!.project,
      filename: `${batchId}_${kind}.jsonl`,
      purpose: 'batch_output',
      bytes,
      createdAtMs: now,
      expiresAtMs: now + retentionSeconds * 1_000,
      blobKey,
    };
    await meta.putFile(file);
    return id;
  };
  const [outputFileId, errorFileId] = await Promise.all([assemble('output', outputParts), assemble('error', errorParts)]);

  const totalUnrun = batch.unrun + unrun;
  const status: BatchStatus = cancelled ? 'cancelled' : failing ? 'failed' : totalUnrun > 0 ? 'expired' : 'completed';
  const now = clock.now();
  const planTotal = (plan?.chunks ?? []).reduce((sum, chunk) => sum + chunk.requests, 0);
  const finished = await meta.updateBatch(batchId, ['finalizing'], {
    status,
    outputFileId,
    errorFileId,
    total: Math.max(batch.total, planTotal),
    completed: batch.completed + recovered.completed,
    failed: batch.failed + recovered.failed + unrun,
    unrun: totalUnrun,
    usage: addUsage(batch.usage, recovered.usage),
    ...endedAt(status, now),
  });
  if (finished) await releaseInputFile(deps, finished);
  await blobs.delete([...outputParts, ...errorParts, ...scratch]);
  deps.log.log('info', 'batch finalized', {
    batchId,
    status,
    completed: batch.completed + recovered.completed,
    failed: batch.failed + recovered.failed + unrun,
    recovered: recovered.completed + recovered.failed,
  });
  return finished?.status ?? (await meta.getBatch(batchId))?.status;
}

/**
 * The lines of a chunk no run recorded, as two parts of the batch's files: its checkpointed
 * successes (recovered output) and, in its error part, its checkpointed failures and then every
 * other line as `reason`. Two streaming passes over the checkpoints; answers what they held.
 */
async function accountForUnrecordedChunk(
  deps: StepDeps,
  batchId: string,
  chunk: ChunkPlanEntry,
  requests: { customId: string }[],
  checkpointKeys: string[],
  reason: UnrunReason,
  parts: { outputParts: string[]; errorParts: string[] },
): Promise<Map<string, CheckpointedLine>> {
  const { blobs } = deps;
  const ids = new Set(requests.map((request) => request.customId));
  const finished = new Map<string, CheckpointedLine>();
  if (checkpointKeys.length > 0) {
    const outputKey = blobKeys.recoveredOutput(batchId, chunk.index);
    const successes = async function* () {
      for await (const line of checkpointLines(blobs, checkpointKeys)) {
        if (!ids.has(line.customId)) continue;
        finished.set(line.customId, { success: line.success, usage: line.usage });
        if (line.success) yield line.text;
      }
    };
    const { bytes } = await blobs.put(outputKey, linesBody(successes()));
    if (bytes > 0) parts.outputParts.push(outputKey);
    else await blobs.delete([outputKey]);
  }
  const errorKey = blobKeys.unrunErrors(batchId, chunk.index);
  const errors = async function* () {
    if (checkpointKeys.length > 0) {
      for await (const line of checkpointLines(blobs, checkpointKeys)) {
        if (ids.has(line.customId) && !line.success) yield line.text;
      }
    }
    for (const request of requests) if (!finished.has(request.customId)) yield unrunLine(request.customId, reason);
  };
  await blobs.put(errorKey, linesBody(errors()));
  parts.errorParts.push(errorKey);
  return finished;
}

const NON_TERMINAL = BATCH_STATUSES.filter((status) => !TERMINAL_STATUSES.includes(status));

/** Why a step failed for good, as the runtime names it: a Lambda error type, a Step Functions error, an exception's name. */
export interface StepFailure {
  error: string;
}

/** The entry a step's failure leaves in the batch's errors, by the status the batch was in. */
function stepFailureError(status: BatchStatus, failure: StepFailure): BatchLineError {
  const cause = failure.error.replace(/[^\w.:-]/g, '').slice(0, 100) || 'unknown error';
  if (status === 'validating') {
    return {
      code: 'validation_failed',
      message: `The input file could not be validated: validation failed after its retries (${cause}).`,
      param: null,
      line: null,
    };
  }
  if (status === 'finalizing') {
    return {
      code: 'finalization_failed',
      message: `The output and error files could not be written: finalization failed after its retries (${cause}).`,
      param: null,
      line: null,
    };
  }
  return {
    code: 'batch_failed',
    message: `The batch could not go on: a lifecycle step failed after its retries (${cause}).`,
    param: null,
    line: null,
  };
}

/**
 * A lifecycle step failed for good (its retries are spent): ends the batch `failed`, with the
 * reason in its errors, and lets go of its input file, so no batch is left in a status nothing
 * will move it from. A batch whose chunks may have run is finalized as failed (answered lines kept,
 * every other line in the error file as batch_failed); when that fails too, or when validation or
 * finalization is what failed, it ends failed without output and error files.
 */
export async function failBatchStep(deps: StepDeps, batchId: string, failure: StepFailure): Promise<BatchStatus | undefined> {
  const { meta, clock, log } = deps;
  const batch = await meta.getBatch(batchId);
  if (!batch) return undefined;
  if (TERMINAL_STATUSES.includes(batch.status)) {
    await releaseInputFile(deps, batch);
    return batch.status;
  }
  const entry = stepFailureError(batch.status, failure);
  const errors = [...(batch.errors ?? []).filter((listed) => listed.message !== entry.message), entry];
  log.log('error', 'a lifecycle step failed for good; the batch ends failed', { batchId, status: batch.status, error: failure.error });
  if (batch.status === 'in_progress' || batch.status === 'cancelling') {
    try {
      if (await meta.updateBatch(batchId, ['in_progress', 'cancelling'], { errors })) return await finalizeStep(deps, batchId);
    } catch (error) {
      log.log('error', 'the failed batch could not be finalized; it ends failed without files', { batchId, error: errorMessage(error) });
    }
  }
  const failed = await meta.updateBatch(batchId, NON_TERMINAL, { status: 'failed', errors, failedAtMs: clock.now() });
  if (!failed) return (await meta.getBatch(batchId))?.status;
  await releaseInputFile(deps, failed);
  // Its scratch (plan, chunk results, checkpoints) serves no one now; the S3 lifecycle rule would reap it too.
  await deps.blobs
    .list(`batches/${batchId}/`)
    .then((keys) => deps.blobs.delete(keys))
    .catch((error: unknown) => log.log('warn', 'scratch cleanup of a failed batch failed', { batchId, error: errorMessage(error) }));
  return failed.status;
}
