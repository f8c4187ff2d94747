// The chunk worker: runs one chunk's requests against their upstream with bounded concurrency,
// saves finished lines in small steps (checkpoints), streams the chunk's output and error lines to
// objects of their own as they finish, and records the chunk's outcome on the batch in one
// idempotent step. It is safe to run twice for the same chunk (SQS delivers at least once): the
// second run's results are never counted, and are deleted. A run after a crash starts from the
// checkpoints: requests the upstream already answered are not sent again, and their lines go in
// the result exactly once. A chunk that fails on every delivery is given up (giveUpChunk): its
// lines are recorded as they stand and the batch ends `failed`, never redelivered for ever.
//
// Memory: a line is held from its answer's first byte until its result object and its checkpoint
// have taken it, and those bytes count against the process's in-flight budget (a lease per
// request), so a chunk of huge answers holds no more than the budget, whatever its size.

import { blobKeys } from '../batch/keys.js';
import { type BatchLineError, type BatchRecord, type BatchStatus, TERMINAL_STATUSES, type UsageTotals } from '../batch/model.js';
import {
  addUsage,
  chunkFailedLine,
  isSuccess,
  resultLine,
  type UnrunReason,
  unfinishedLine,
  unrunLine,
  usageOf,
} from '../batch/results.js';
import { newAttemptId } from '../ids.js';
import { type ChunkRequest, readChunkRequests } from '../input/chunk-reader.js';
import { errorMessage, type Logger } from '../log.js';
import type { BlobStore, ChunkMessage, Clock, Lifecycle, MetaStore } from '../ports.js';
import type { ResponseBudget } from '../upstream/response-budget.js';
import type { UpstreamRouter } from '../upstream/types.js';
import {
  type CheckpointedLine,
  type CheckpointOptions,
  CheckpointWriter,
  checkpointLines,
  DEFAULT_CHECKPOINTS,
  DEFAULT_MAX_PENDING_BYTES,
  summarize,
} from './checkpoints.js';
import { LineWriter, PIECE_BYTES } from './line-writer.js';

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
  /**
   * The process's budget of answer bytes held at once (MAX_INFLIGHT_RESPONSE_BYTES), shared by
   * every chunk it runs. Without one, answers are bounded only one by one (MAX_RESPONSE_BYTES).
   */
  responses?: ResponseBudget;
}

const RUNNING: readonly BatchStatus[] = ['in_progress', 'cancelling'];
/** Chunk failures named on the batch at most (the error file names every line whatever this is). */
const MAX_CHUNK_FAILURES_LISTED = 20;

/** The chunk's two result objects for one run: its output lines and its error lines, streamed as they finish. */
class ChunkResult {
  readonly output: LineWriter;
  readonly errors: LineWriter;

  constructor(blobs: BlobStore, batchId: string, index: number, attempt: string) {
    this.output = new LineWriter(blobs, blobKeys.chunkOutput(batchId, index, attempt));
    this.errors = new LineWriter(blobs, blobKeys.chunkErrors(batchId, index, attempt));
  }

  get keys(): string[] {
    return [this.output.key, this.errors.key];
  }

  write(line: string | Uint8Array, success: boolean): Promise<void> {
    return (success ? this.output : this.errors).write(line);
  }

  async end(): Promise<void> {
    await Promise.all([this.output.end(), this.errors.end()]);
  }

  async abort(error: unknown): Promise<void> {
    await Promise.all([this.output.abort(error), this.errors.abort(error)]);
  }

  /** Copies what earlier runs checkpointed into this result (first line per custom_id); answers what was copied. */
  async copySaved(blobs: BlobStore, keys: readonly string[]): Promise<Map<string, CheckpointedLine>> {
    const saved = new Map<string, CheckpointedLine>();
    for await (const line of checkpointLines(blobs, keys)) {
      saved.set(line.customId, { success: line.success, usage: line.usage });
      await this.write(line.text, line.success);
    }
    return saved;
  }
}

/** Whether a delivery of this chunk has anything to do; when not, signals the lifecycle if the batch only waits for that. */
async function stillToRun(deps: ChunkWorkerDeps, message: ChunkMessage): Promise<BatchRecord | undefined> {
  const { batchId, chunk } = message;
  const batch = await deps.meta.getBatch(batchId);
  // Finalization accounts for every chunk not recorded by then, so a late chunk has nothing to do.
  if (batch && RUNNING.includes(batch.status) && !batch.doneChunks.includes(chunk.index)) return batch;
  deps.log.log('debug', 'chunk skipped', { batchId, chunk: chunk.index, status: batch?.status });
  // A redelivery of the last chunk: the first run may have recorded it and then failed to
  // signal, which would leave the batch waiting for its window. Signalling again is harmless.
  if (batch && RUNNING.includes(batch.status) && batch.doneChunks.length >= batch.chunkCount) {
    await deps.lifecycle.allChunksDone(batchId);
  }
  return undefined;
}

export async function runChunk(deps: ChunkWorkerDeps, message: ChunkMessage): Promise<void> {
  const { blobs, clock, log } = deps;
  const { batchId, chunk } = message;
  const batch = await stillToRun(deps, message);
  if (!batch) return;

  const [requests, savedKeys] = await Promise.all([
    readChunkRequests(blobs, message.inputBlobKey, chunk),
    blobs.list(blobKeys.checkpointsOfChunk(batchId, chunk.index)),
  ]);
  const upstream = batch.model ? deps.upstreams.route(batch.model) : undefined;
  const attempt = newAttemptId();
  const result = new ChunkResult(blobs, batchId, chunk.index, attempt);
  let completed = 0;
  let failed = 0;
  let unrun = 0;
  let usage: UsageTotals;
  try {
    // What earlier runs finished counts in this run's outcome, as if this run had done it.
    const saved = await result.copySaved(blobs, savedKeys);
    const resumed = summarize(saved.values());
    completed = resumed.completed;
    failed = resumed.failed;
    usage = resumed.usage;
    const toRun = saved.size > 0 ? requests.filter((request) => !saved.has(request.customId)) : requests;
    if (saved.size > 0) {
      log.log('info', 'chunk resumed from checkpoints', { batchId, chunk: chunk.index, answered: saved.size, remaining: toRun.length });
    }

    const watch = watchForStop(deps, batch);
    const checkpoints = new CheckpointWriter({ blobs, clock, log }, batchId, chunk.index, attempt, checkpointOptions(deps));
    // A line that cannot be stored fails the run: nothing more is sent for it.
    let storeFailed = false;
    const mayStart = () => !storeFailed && !watch.reason();

    const runOne = async (request: ChunkRequest) => {
      // Held from the answer's first byte until the result object and the checkpoint have the line.
      const lease = deps.responses?.lease();
      let holders: Promise<unknown>[] = [];
      try {
        const answer = upstream
          ? await upstream.send({ url: request.url, body: request.body }, { deadlineMs: batch.expiresAtMs, mayStart, lease })
          : { kind: 'error' as const, code: 'model_not_found', message: `No upstream serves the model ${batch.model}.` };
        let line: string;
        let success = false;
        if (!answer) {
          unrun += 1;
          line = unrunLine(request.customId, watch.reason() ?? 'batch_expired');
        } else if (answer.unfinished) {
          unrun += 1;
          line = unfinishedLine(request.customId, watch.reason() ?? 'batch_expired', answer);
        } else if (isSuccess(answer)) {
          completed += 1;
          usage = addUsage(usage, usageOf(answer.kind === 'response' ? answer.body : undefined));
          line = resultLine(request.customId, answer);
          success = true;
        } else {
          failed += 1;
          line = resultLine(request.customId, answer);
        }
        // A large line becomes bytes once, for the result object and the checkpoint both (its text can go).
        const bytes = line.length >= PIECE_BYTES ? Buffer.from(line) : line;
        // Lines that never ran are not checkpointed: a later run tries them again.
        const checkpointed = upstream && answer && !answer.unfinished ? checkpoints.add(bytes) : undefined;
        const written = result.write(bytes, success);
        holders = [written, ...(checkpointed ? [checkpointed] : [])];
        await written;
      } catch (error) {
        storeFailed = true;
        throw error;
      } finally {
        if (lease) void Promise.allSettled(holders).then(() => lease.release());
      }
    };

    try {
      // Every request settles before the run ends, so nothing of it goes on in the background.
      const outcomes = await Promise.allSettled(toRun.map(runOne));
      const rejected = outcomes.find((outcome) => outcome.status === 'rejected');
      if (rejected) throw rejected.reason;
    } finally {
      watch.stop();
      await checkpoints.close();
    }
    await result.end();
    await recordResult(deps, message, result, [...savedKeys, ...checkpoints.keys], {
      index: chunk.index,
      attempt,
      completed,
      failed: failed + unrun,
      unrun,
      usage,
    });
  } catch (error) {
    await discard(deps, result, error);
    throw error;
  }
}

/**
 * Lines wait in the checkpoint writer holding their budget: it writes once a quarter of the budget
 * waits (or 8 MiB, whichever is less), so requests never stall behind a checkpoint's interval.
 */
function checkpointOptions(deps: ChunkWorkerDeps): CheckpointOptions {
  const options = deps.checkpoints ?? DEFAULT_CHECKPOINTS;
  if (options.maxBytes !== undefined || !deps.responses) return options;
  return { ...options, maxBytes: Math.min(DEFAULT_MAX_PENDING_BYTES, Math.floor(deps.responses.limitBytes / 4)) };
}

/** A run that failed leaves nothing behind: neither object is stored, or the one that was is deleted. */
async function discard(deps: ChunkWorkerDeps, result: ChunkResult, error: unknown): Promise<void> {
  await result.abort(error);
  await deps.blobs.delete(result.keys).catch(() => undefined);
}

/**
 * The last delivery of a chunk failed too (the local queue's last try; SQS's last receive before
 * the dead-letter queue): what retrying did not mend, it will not. Records the chunk as it stands
 * so the batch goes on, and marks the batch so that it ends `failed`: lines the runs checkpointed
 * keep their answers, every other line of the chunk is in the error file as `chunk_failed`. Safe
 * to run again, and against a run that is still going (only one of them is recorded).
 */
export async function giveUpChunk(deps: ChunkWorkerDeps, message: ChunkMessage, cause: unknown): Promise<void> {
  const { blobs, log } = deps;
  const { batchId, chunk } = message;
  const batch = await stillToRun(deps, message);
  if (!batch) return;
  const why = `chunk ${chunk.index} (${chunk.requests} requests) failed on every delivery (${errorName(cause)})`;
  log.log('error', 'chunk given up: its lines are recorded as failed and the batch will end failed', {
    batchId,
    chunk: chunk.index,
    error: errorMessage(cause),
  });
  // The mark goes first: should this stop half-way, finalization still ends the batch failed.
  const failure: BatchLineError = { code: 'chunk_failed', message: `The batch failed: ${why}.`, param: null, line: null };
  const listed = (batch.errors ?? []).filter((entry) => entry.message !== failure.message);
  await deps.meta.updateBatch(batchId, RUNNING, { errors: [...listed, failure].slice(-MAX_CHUNK_FAILURES_LISTED) });

  const savedKeys = await blobs.list(blobKeys.checkpointsOfChunk(batchId, chunk.index));
  const attempt = newAttemptId();
  const result = new ChunkResult(blobs, batchId, chunk.index, attempt);
  try {
    const saved = await result.copySaved(blobs, savedKeys);
    const counts = summarize(saved.values());
    let requests: ChunkRequest[] | undefined;
    try {
      requests = await readChunkRequests(blobs, message.inputBlobKey, chunk);
    } catch (error) {
      // The input itself cannot be read: the lines cannot be named, but they are still counted.
      log.log('error', 'the lines of a given-up chunk cannot be read', { batchId, chunk: chunk.index, error: errorMessage(error) });
    }
    const lineMessage = `This request has no result: its ${why}.`;
    for (const request of requests ?? []) {
      if (!saved.has(request.customId)) await result.write(chunkFailedLine(request.customId, lineMessage), false);
    }
    await result.end();
    await recordResult(deps, message, result, savedKeys, {
      index: chunk.index,
      attempt,
      completed: counts.completed,
      failed: chunk.requests - counts.completed,
      unrun: 0,
      usage: counts.usage,
    });
  } catch (error) {
    await discard(deps, result, error);
    throw error;
  }
}

/** Records a run's outcome once; a result that is not recorded is deleted, and the last chunk signals the lifecycle. */
async function recordResult(
  deps: ChunkWorkerDeps,
  message: ChunkMessage,
  result: ChunkResult,
  checkpointKeys: string[],
  outcome: Parameters<MetaStore['recordChunk']>[1],
): Promise<void> {
  const { meta, blobs, log } = deps;
  const { batchId, chunk } = message;
  const recorded = await meta.recordChunk(batchId, outcome);
  if (!recorded.recorded) {
    // This run's checkpoints are garbage once another run recorded the chunk, or once the batch is
    // final; while it is finalizing, finalization reads them and deletes them after.
    const latest = recorded.reason === 'duplicate' ? undefined : await meta.getBatch(batchId);
    const garbage = recorded.reason === 'duplicate' || !latest || TERMINAL_STATUSES.includes(latest.status);
    const ours = checkpointKeys.filter((key) => key.includes(`/ckpt-${outcome.attempt}-`));
    await blobs.delete([...result.keys, ...(garbage ? ours : [])]);
    log.log('info', 'chunk result discarded', { batchId, chunk: chunk.index, reason: recorded.reason });
    return;
  }
  // Recorded: the checkpoints have served. Those of a concurrent run, if any, go at finalization.
  await blobs
    .delete(checkpointKeys)
    .catch((error: unknown) => log.log('warn', 'checkpoint cleanup failed', { batchId, chunk: chunk.index, error: errorMessage(error) }));
  log.log('debug', 'chunk recorded', {
    batchId,
    chunk: chunk.index,
    completed: outcome.completed,
    failed: outcome.failed,
    unrun: outcome.unrun,
  });
  if (recorded.batch.doneChunks.length >= recorded.batch.chunkCount) await deps.lifecycle.allChunksDone(batchId);
}

function errorName(error: unknown): string {
  return error instanceof Error ? error.name : 'unknown error';
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
