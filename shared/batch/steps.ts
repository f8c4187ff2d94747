// The steps of a batch's lifecycle: validate, enqueue, finalize. The Step Functions state machine
// (AWS) and the local driver call these same functions. Each is idempotent: it may run again after
// a crash or a retry and the batch ends the same.
import { createHash } from 'node:crypto';
import { readChunkRequests } from '../input/chunk-reader.js';
import { cutToBytes, QUOTE_BYTES } from '../input/request-line.js';
import { validateBatchInput } from '../input/validate.js';
import { moreErrorsNotice } from '../input/validation-errors.js';
import type { Logger } from '../log.js';
import type { BlobStore, Clock, MetaStore, WorkQueue } from '../ports.js';
import type { UpstreamRouter } from '../upstream/types.js';
import { type CheckpointedLine, listCheckpoints, readCheckpoints, summarize } from '../work/checkpoints.js';
import { releaseInputFile } from './input-file.js';
import { blobKeys } from './keys.js';
import {
  type BatchLineError,
  type BatchRecord,
  type BatchStatus,
  type ChunkPlanEntry,
  type FileRecord,
  TERMINAL_STATUSES,
  ZERO_USAGE,
} from './model.js';
import { addUsage, unrunLine } from './results.js';

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

/**
 * Stops taking chunk results, then merges the recorded chunks' objects into one output file and
 * one error file, streaming. A chunk with no recorded outcome keeps the lines its worker had
 * checkpointed (output or error, as they were, counted now); each of its other lines goes to the
 * error file as batch_cancelled or batch_expired, so every custom_id appears exactly once.
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
  const reason = cancelled ? 'batch_cancelled' : 'batch_expired';
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
    const keys = checkpoints.get(chunk.index);
    const saved = keys ? (await readCheckpoints(blobs, batchId, chunk.index, keys)).lines : new Map<string, CheckpointedLine>();
    const finished = requests.flatMap((request) => saved.get(request.customId) ?? []);
    const outputKey = blobKeys.recoveredOutput(batchId, chunk.index);
    const errorKey = blobKeys.unrunErrors(batchId, chunk.index);
    const errorLines = requests.map((request) => {
      const line = saved.get(request.customId);
      return line ? (line.success ? '' : line.text) : unrunLine(request.customId, reason);
    });
    if (finished.some((line) => line.success)) {
      await blobs.put(
        outputKey,
        finished
          .filter((line) => line.success)
          .map((line) => line.text)
          .join(''),
      );
      outputParts.push(outputKey);
    }
    await blobs.put(errorKey, errorLines.join(''));
    errorParts.push(errorKey);
    const counts = summarize(finished);
    recovered = {
      completed: recovered.completed + counts.completed,
      failed: recovered.failed + counts.failed,
      usage: addUsage(recovered.usage, counts.usage),
    };
    unrun += requests.length - finished.length;
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
  const status: BatchStatus = cancelled ? 'cancelled' : totalUnrun > 0 ? 'expired' : 'completed';
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
    ...(status === 'cancelled' ? { cancelledAtMs: now } : status === 'expired' ? { expiredAtMs: now } : { completedAtMs: now }),
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
