// The chunk worker: runs one chunk's requests against their upstream with bounded concurrency,
// saves finished lines in small steps (checkpoints), writes the chunk's output and error lines as
// objects of their own, and records the chunk's outcome on the batch in one idempotent step. It is
// safe to run twice for the same chunk (SQS delivers at least once): the second run's results are
// never counted, and are deleted. A run after a crash starts from the checkpoints: requests the
// upstream already answered are not sent again, and their lines go in the result exactly once.

import { blobKeys } from '../batch/keys.js';
import { type BatchRecord, type BatchStatus, TERMINAL_STATUSES, type UsageTotals } from '../batch/model.js';
import { addUsage, isSuccess, resultLine, type UnrunReason, unfinishedLine, unrunLine, usageOf } from '../batch/results.js';
import { newAttemptId } from '../ids.js';
import { type ChunkRequest, readChunkRequests } from '../input/chunk-reader.js';
import { errorMessage, type Logger } from '../log.js';
import type { BlobStore, ChunkMessage, Clock, Lifecycle, MetaStore } from '../ports.js';
import type { UpstreamRouter } from '../upstream/types.js';
import { type CheckpointOptions, CheckpointWriter, readCheckpoints, summarize } from './checkpoints.js';

export interface ChunkWorkerDeps {
  meta: MetaStore;
  blobs: BlobStore;
  lifecycle: Lifecycle;
  upstreams: UpstreamRouter;
  clock: Clock;
  log: Logger;
  /** How often a running chunk looks for a cancel. */
  statusPollMs?: number;
  /** How often finished lines are saved (default every 2 s, or sooner once 500 lines wait). */
  checkpoints?: CheckpointOptions;
}

const RUNNING: readonly BatchStatus[] = ['in_progress', 'cancelling'];

export async function runChunk(deps: ChunkWorkerDeps, message: ChunkMessage): Promise<void> {
  const { meta, blobs, clock, log } = deps;
  const { batchId, chunk } = message;
  const batch = await meta.getBatch(batchId);
  // Finalization accounts for every chunk not recorded by then, so a late chunk has nothing to do.
  if (!batch || !RUNNING.includes(batch.status) || batch.doneChunks.includes(chunk.index)) {
    log.log('debug', 'chunk skipped', { batchId, chunk: chunk.index, status: batch?.status });
    // A redelivery of the last chunk: the first run may have recorded it and then failed to
    // signal, which would leave the batch waiting for its window. Signalling again is harmless.
    if (batch && RUNNING.includes(batch.status) && batch.doneChunks.length >= batch.chunkCount) {
      await deps.lifecycle.allChunksDone(batchId);
    }
    return;
  }

  const [requests, saved] = await Promise.all([
    readChunkRequests(blobs, message.inputBlobKey, chunk),
    readCheckpoints(blobs, batchId, chunk.index),
  ]);
  const watch = watchForStop(deps, batch);
  const upstream = batch.model ? deps.upstreams.route(batch.model) : undefined;
  const attempt = newAttemptId();
  const checkpoints = new CheckpointWriter({ blobs, clock, log }, batchId, chunk.index, attempt, deps.checkpoints);

  // What earlier runs finished counts in this run's outcome, as if this run had done it.
  const outputs: string[] = [];
  const errors: string[] = [];
  const resumed = summarize(saved.lines.values());
  for (const line of saved.lines.values()) (line.success ? outputs : errors).push(line.text);
  let completed = resumed.completed;
  let failed = resumed.failed;
  let unrun = 0;
  let usage: UsageTotals = resumed.usage;
  const toRun = saved.lines.size > 0 ? requests.filter((request) => !saved.lines.has(request.customId)) : requests;
  if (saved.lines.size > 0) {
    log.log('info', 'chunk resumed from checkpoints', { batchId, chunk: chunk.index, answered: saved.lines.size, remaining: toRun.length });
  }

  const runOne = async (request: ChunkRequest) => {
    const result = upstream
      ? await upstream.send({ url: request.url, body: request.body }, { deadlineMs: batch.expiresAtMs, mayStart: () => !watch.reason() })
      : { kind: 'error' as const, code: 'model_not_found', message: `No upstream serves the model ${batch.model}.` };
    if (!result) {
      unrun += 1;
      errors.push(unrunLine(request.customId, watch.reason() ?? 'batch_expired'));
    } else if (result.unfinished) {
      unrun += 1;
      errors.push(unfinishedLine(request.customId, watch.reason() ?? 'batch_expired', result));
    } else if (isSuccess(result)) {
      completed += 1;
      usage = addUsage(usage, usageOf(result.kind === 'response' ? result.body : undefined));
      const line = resultLine(request.customId, result);
      outputs.push(line);
      if (upstream) checkpoints.add(line);
    } else {
      failed += 1;
      const line = resultLine(request.customId, result);
      errors.push(line);
      if (upstream) checkpoints.add(line);
    }
  };

  try {
    await Promise.all(toRun.map(runOne));
  } finally {
    watch.stop();
    await checkpoints.close();
  }

  const outputKey = blobKeys.chunkOutput(batchId, chunk.index, attempt);
  const errorKey = blobKeys.chunkErrors(batchId, chunk.index, attempt);
  await Promise.all([blobs.put(outputKey, outputs.join('')), blobs.put(errorKey, errors.join(''))]);

  const recorded = await meta.recordChunk(batchId, {
    index: chunk.index,
    attempt,
    completed,
    failed: failed + unrun,
    unrun,
    usage,
  });
  if (!recorded.recorded) {
    // This run's checkpoints are garbage once another run recorded the chunk, or once the batch is
    // final; while it is finalizing, finalization reads them and deletes them after.
    const latest = recorded.reason === 'duplicate' ? undefined : await meta.getBatch(batchId);
    const garbage = recorded.reason === 'duplicate' || !latest || TERMINAL_STATUSES.includes(latest.status);
    await blobs.delete([outputKey, errorKey, ...(garbage ? checkpoints.keys : [])]);
    log.log('info', 'chunk result discarded', { batchId, chunk: chunk.index, reason: recorded.reason });
    return;
  }
  // Recorded: the checkpoints have served. Those of a concurrent run, if any, go at finalization.
  await blobs
    .delete([...saved.keys, ...checkpoints.keys])
    .catch((error: unknown) => log.log('warn', 'checkpoint cleanup failed', { batchId, chunk: chunk.index, error: errorMessage(error) }));
  log.log('debug', 'chunk recorded', { batchId, chunk: chunk.index, completed, failed, unrun });
  if (recorded.batch.doneChunks.length >= recorded.batch.chunkCount) await deps.lifecycle.allChunksDone(batchId);
}

/**
 * Why new requests must not start: the batch was cancelled (seen by polling its status, which
 * works the same against DynamoDB) or its window has passed.
 */
function watchForStop(deps: ChunkWorkerDeps, batch: BatchRecord) {
  let cancelled = batch.status === 'cancelling';
  let closed = false;
  const timer = setInterval(() => {
    deps.meta.getBatch(batch.id).then(
      (latest) => {
        if (latest?.status === 'cancelling' || latest?.cancellingAtMs) cancelled = true;
        else if (latest?.status !== 'in_progress') closed = true;
      },
      (error) => deps.log.log('warn', 'batch status poll failed', { batchId: batch.id, error: errorMessage(error) }),
    );
  }, deps.statusPollMs ?? 1_000);
  timer.unref();
  return {
    reason(): UnrunReason | undefined {
      if (cancelled) return 'batch_cancelled';
      return closed || deps.clock.now() >= batch.expiresAtMs ? 'batch_expired' : undefined;
    },
    stop: () => clearInterval(timer),
  };
}
