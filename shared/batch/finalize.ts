// Step "Finalize": stops taking chunk results, then merges the recorded chunks' objects into one
// output file and one error file, streaming. A chunk with no recorded outcome keeps the lines its
// worker had checkpointed (output or error, as they were, counted now); each of its other lines
// goes to the error file as batch_cancelled, batch_failed or batch_expired, so every custom_id
// appears exactly once. Nothing joins a chunk's lines: every object is written as a stream of lines.
// A Melious batch gets one output file holding both (one-file.ts).
import { readChunkRequests } from '../input/chunk-reader.js';
import { BatchStatusConflict } from '../ports.js';
import { type CheckpointedLine, checkpointLines, listCheckpoints, summarize } from '../work/checkpoints.js';
import { linesBody } from '../work/line-writer.js';
import { type BatchFileKind, batchFileRecord, derivedFileId } from './files.js';
import { releaseInputFile } from './input-file.js';
import { blobKeys, recordedChunkObjects } from './keys.js';
import { type BatchRecord, type BatchStatus, type ChunkPlanEntry, TERMINAL_STATUSES, ZERO_USAGE } from './model.js';
import { oneFileParts } from './one-file.js';
import { addUsage, type UnrunReason, unrunLine } from './results.js';
import { readPlan, releaseQuota, type StepDeps } from './steps.js';
import { advance, transition } from './transitions.js';

export async function finalizeStep(deps: StepDeps, batchId: string): Promise<BatchStatus | undefined> {
  const { meta, blobs } = deps;
  let batch = await meta.getBatch(batchId);
  if (!batch) return undefined;
  if (TERMINAL_STATUSES.includes(batch.status)) {
    await releaseInputFile(deps, batch);
    await releaseQuota(deps, batch);
    return batch.status;
  }
  if (batch.status === 'validating') return batch.status;
  if (batch.status !== 'finalizing') {
    // From here on recordChunk refuses results: the counts read below are final.
    batch = await advance(deps, batchId, 'finalizing');
    if (!batch) return finalizeStep(deps, batchId);
  }

  const cancelled = batch.cancellingAtMs !== null;
  // A running batch has errors only when it is to end failed: a chunk was given up, or a step
  // failed for good (a failed validation sets them too, but that batch is final already).
  const failing = !cancelled && (batch.errors?.length ?? 0) > 0;
  const reason: UnrunReason = cancelled ? 'batch_cancelled' : failing ? 'batch_failed' : 'batch_expired';
  const [plan, checkpoints] = await Promise.all([readPlan(blobs, batchId), listCheckpoints(blobs, batchId)]);
  const outputParts: string[] = [];
  const errorParts: string[] = [];
  const scratch: string[] = [...checkpoints.values()].flat();
  let unrun = 0;
  // Lines of unrecorded chunks taken from their checkpoints: not in the batch's counts yet.
  let recovered = { completed: 0, failed: 0, usage: ZERO_USAGE };
  for (const chunk of plan?.chunks ?? []) {
    const recorded = recordedChunkObjects(batch, chunk.index);
    if (recorded) {
      outputParts.push(recorded.output);
      errorParts.push(recorded.errors);
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

  let outputFileId: string | null;
  let errorFileId: string | null = null;
  if (batch.dialect === 'melious') {
    const one = await oneFileParts(blobs, outputParts, errorParts, (index) => blobKeys.oneFilePart(batchId, index));
    scratch.push(...one.written);
    outputFileId = await assemble(deps, batch, 'output', one.parts);
  } else {
    [outputFileId, errorFileId] = await Promise.all([
      assemble(deps, batch, 'output', outputParts),
      assemble(deps, batch, 'error', errorParts),
    ]);
  }

  const totalUnrun = batch.unrun + unrun;
  const status: BatchStatus = cancelled ? 'cancelled' : failing ? 'failed' : totalUnrun > 0 ? 'expired' : 'completed';
  const planTotal = (plan?.chunks ?? []).reduce((sum, chunk) => sum + chunk.requests, 0);
  let finished: BatchRecord | undefined;
  try {
    finished = await transition(deps, batch, status, {
      outputFileId,
      errorFileId,
      total: Math.max(batch.total, planTotal),
      completed: batch.completed + recovered.completed,
      failed: batch.failed + recovered.failed + unrun,
      unrun: totalUnrun,
      usage: addUsage(batch.usage, recovered.usage),
    });
  } catch (error) {
    // Another finalization of the same batch ended it first, with the same files.
    if (!(error instanceof BatchStatusConflict)) throw error;
  }
  if (finished) await releaseInputFile(deps, finished);
  if (finished) await releaseQuota(deps, finished);
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

/** Joins the parts into the batch's output or error file; no file (null) when they hold nothing. */
async function assemble(deps: StepDeps, batch: BatchRecord, kind: BatchFileKind, parts: string[]): Promise<string | null> {
  const blobKey = blobKeys.file(derivedFileId(batch.id, kind));
  const { bytes } = await deps.blobs.concat(blobKey, parts);
  if (bytes === 0) {
    await deps.blobs.delete([blobKey]);
    return null;
  }
  const file = batchFileRecord(batch, kind, bytes, deps.clock.now());
  await deps.meta.putFile(file);
  return file.id;
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
