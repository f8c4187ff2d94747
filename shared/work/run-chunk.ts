// The chunk worker: runs one chunk's requests against their upstream with bounded concurrency,
// writes the chunk's output and error lines as objects of their own, and records the chunk's
// outcome on the batch in one idempotent step. It is safe to run twice for the same chunk (SQS
// delivers at least once): the second run's results are never counted, and are deleted.
import { blobKeys } from '../batch/keys.js';
import { readChunkRequests, type ChunkRequest } from '../batch/chunk-reader.js';
import { ZERO_USAGE, type BatchRecord, type BatchStatus, type UsageTotals } from '../batch/model.js';
import { addUsage, isSuccess, resultLine, unrunLine, usageOf, type UnrunReason } from '../batch/results.js';
import { newAttemptId } from '../ids.js';
import { errorMessage, type Logger } from '../log.js';
import type { BlobStore, ChunkMessage, Clock, Lifecycle, MetaStore } from '../ports.js';
import type { UpstreamRouter } from '../upstream/types.js';

export interface ChunkWorkerDeps {
  meta: MetaStore;
  blobs: BlobStore;
  lifecycle: Lifecycle;
  upstreams: UpstreamRouter;
  clock: Clock;
  log: Logger;
  /** How often a running chunk looks for a cancel. */
  statusPollMs?: number;
}

const RUNNING: readonly BatchStatus[] = ['in_progress', 'cancelling'];

export async function runChunk(deps: ChunkWorkerDeps, message: ChunkMessage): Promise<void> {
  const { meta, blobs, clock, log } = deps;
  const { batchId, chunk } = message;
  const batch = await meta.getBatch(batchId);
  // Finalization accounts for every chunk not recorded by then, so a late chunk has nothing to do.
  if (!batch || !RUNNING.includes(batch.status) || batch.doneChunks.includes(chunk.index)) {
    log.log('debug', 'chunk skipped', { batchId, chunk: chunk.index, status: batch?.status });
    return;
  }

  const requests = await readChunkRequests(blobs, message.inputBlobKey, chunk);
  const watch = watchForStop(deps, batch);
  const upstream = batch.model ? deps.upstreams.route(batch.model) : undefined;
  const outputs: string[] = [];
  const errors: string[] = [];
  let completed = 0;
  let failed = 0;
  let unrun = 0;
  let usage: UsageTotals = ZERO_USAGE;

  const runOne = async (request: ChunkRequest) => {
    const result = upstream
      ? await upstream.send({ url: request.url, body: request.body }, { deadlineMs: batch.expiresAtMs, mayStart: () => !watch.reason() })
      : { kind: 'error' as const, code: 'model_not_found', message: `No upstream serves the model ${batch.model}.` };
    if (!result) {
      unrun += 1;
      errors.push(unrunLine(request.customId, watch.reason() ?? 'batch_expired'));
    } else if (isSuccess(result)) {
      completed += 1;
      usage = addUsage(usage, usageOf(result.kind === 'response' ? result.body : undefined));
      outputs.push(resultLine(request.customId, result));
    } else {
      failed += 1;
      errors.push(resultLine(request.customId, result));
    }
  };

  try {
    await Promise.all(requests.map(runOne));
  } finally {
    watch.stop();
  }

  const attempt = newAttemptId();
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
    await blobs.delete([outputKey, errorKey]);
    log.log('info', 'chunk result discarded', { batchId, chunk: chunk.index, reason: recorded.reason });
    return;
  }
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
