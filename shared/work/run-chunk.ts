// The chunk worker: runs one chunk's requests against their upstream with bounded concurrency,
// saves finished lines in small steps (checkpoints), streams the chunk's output and error lines to
// objects of their own as they finish, and records the chunk's outcome on the batch in one
// idempotent step. It is safe to run twice for the same chunk (SQS delivers at least once): the
// second run's results are never counted, and are deleted. A run after a crash starts from the
// checkpoints: requests the upstream already answered are not sent again, and their lines go in
// the result exactly once. A chunk that fails on every delivery is given up (giveUpChunk): its
// lines are recorded as they stand and the batch ends `failed`, never redelivered for ever.
//
// A run with a deadline (a Lambda invocation's end) stops starting requests a third of its time
// before it (at most one upstream timeout: requests already started can still finish), aborts what
// is still on the wire a reserve before it, checkpoints what finished, and hands the rest back: the
// chunk goes back on the queue, due in a second, as a new message (so it does not count as a failed
// receive), and that delivery resumes from the checkpoints.
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
import { chunkMessage, readPlan, type StoredPlan } from '../batch/steps.js';
import { newAttemptId } from '../ids.js';
import { type ChunkRequest, readChunkRequests } from '../input/chunk-reader.js';
import { errorMessage, type Logger } from '../log.js';
import type { BlobStore, ChunkMessage, Clock, Lifecycle, MetaStore, WorkQueue } from '../ports.js';
import { successorChunk } from '../schedule/chunk-window.js';
import type { ResponseBudget } from '../upstream/response-budget.js';
import type { UpstreamResult, UpstreamRouter } from '../upstream/types.js';
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
  /** Where a chunk that ran out of time goes back (needed only by runs with a deadline). */
  queue?: WorkQueue;
  /** UPSTREAM_TIMEOUT: the longest a request already on the wire may need to finish. */
  upstreamTimeoutMs?: number;
  /**
   * CHUNK_WINDOW: a batch's chunks on the queue at once. A recorded chunk puts the chunk `window`
   * places after it on the queue (shared/schedule/chunk-window.ts); unset, every chunk was enqueued at the start.
   */
  chunkWindow?: number;
}

/** What bounds one run of a chunk: in AWS, the Lambda invocation's end; locally nothing. */
export interface RunLimits {
  /** When the run must be over (epoch ms, by the worker's clock). */
  deadlineMs?: number;
}

/** `done`: the chunk's outcome was recorded (or had nothing to do); `handed_back`: it was queued again, to go on from its checkpoints. */
export type RunOutcome = 'done' | 'handed_back';

/** Kept before the deadline for checkpointing and handing back: at most this, at most a tenth of the time left. */
export const HAND_BACK_RESERVE_MS = 15_000;
/** A chunk handed back is delivered again after this long. */
export const HAND_BACK_DELAY_MS = 1_000;

/** A run that ran out of time without finishing a single request: counted as a failed delivery, not handed back. */
export class ChunkOutOfTime extends Error {
  override name = 'ChunkOutOfTime';
}

/**
 * When a run with this deadline stops starting requests, and when it aborts those still on the
 * wire: the last third of the time left before the reserve (at most one upstream timeout) is for
 * requests already started to finish.
 */
export function handBackTimes(nowMs: number, deadlineMs: number, upstreamTimeoutMs: number): { stopAtMs: number; abortAtMs: number } {
  const left = Math.max(0, deadlineMs - nowMs);
  const abortAtMs = deadlineMs - Math.min(HAND_BACK_RESERVE_MS, left / 10);
  const drainMs = Math.min(upstreamTimeoutMs, Math.max(0, abortAtMs - nowMs) / 3);
  return { stopAtMs: abortAtMs - drainMs, abortAtMs };
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
  // A redelivery of a recorded chunk: the first run may have stopped before it enqueued the chunk's
  // successor in the window. Enqueueing it again is harmless.
  if (batch && RUNNING.includes(batch.status)) await enqueueSuccessor(deps, message, batch);
  // A redelivery of the last chunk: the first run may have recorded it and then failed to
  // signal, which would leave the batch waiting for its window. Signalling again is harmless.
  if (batch && RUNNING.includes(batch.status) && batch.doneChunks.length >= batch.chunkCount) {
    await deps.lifecycle.allChunksDone(batchId);
  }
  return undefined;
}

export async function runChunk(deps: ChunkWorkerDeps, message: ChunkMessage, limits: RunLimits = {}): Promise<RunOutcome> {
  const { blobs, clock, log } = deps;
  const { batchId, chunk } = message;
  const batch = await stillToRun(deps, message);
  if (!batch) return 'done';

  const [requests, savedKeys] = await Promise.all([
    readChunkRequests(blobs, message.inputBlobKey, chunk),
    blobs.list(blobKeys.checkpointsOfChunk(batchId, chunk.index)),
  ]);
  const upstream = batch.model ? deps.upstreams.route(batch.model) : undefined;
  const attempt = newAttemptId();
  const result = new ChunkResult(blobs, batchId, chunk.index, attempt);
  const tenant = { project: batch.project, batchId, ...(batch.priority ? { priority: batch.priority } : {}) };
  let completed = 0;
  let failed = 0;
  let unrun = 0;
  /** Lines this run answered (and checkpointed), and requests it left for the next delivery. */
  let answered = 0;
  let left = 0;
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
    // Requests of this run on the wire (from the moment an attempt may start until its answer):
    // the checkpoints keep pace with them, so a crash redoes little more than what was in flight.
    let onWire = 0;
    const checkpoints = new CheckpointWriter({ blobs, clock, log }, batchId, chunk.index, attempt, {
      ...checkpointOptions(deps),
      inFlight: () => onWire,
    });
    // A line that cannot be stored fails the run: nothing more is sent for it.
    let storeFailed = false;
    const time = deadlineWatch(deps, limits.deadlineMs);
    const mayStart = () => !storeFailed && !watch.reason() && !time.outOfTime();
    // Nothing starts after the window closes, nor after this run must stop starting requests.
    const deadlineMs = Math.min(batch.expiresAtMs, time.stopAtMs);

    const runOne = async (request: ChunkRequest) => {
      // Held from the answer's first byte until the result object and the checkpoint have the line.
      const lease = deps.responses?.lease();
      let holders: Promise<unknown>[] = [];
      let started = false;
      const mayStartThis = () => {
        const may = mayStart();
        if (may && !started) {
          started = true;
          onWire += 1;
        }
        return may;
      };
      try {
        let answer: UpstreamResult | undefined;
        try {
          answer = upstream
            ? await upstream.send(
                { url: request.url, body: request.body },
                { deadlineMs, mayStart: mayStartThis, lease, signal: time.signal, tenant },
              )
            : { kind: 'error' as const, code: 'model_not_found', message: `No upstream serves the model ${batch.model}.` };
        } finally {
          if (started) onWire -= 1;
        }
        // Not run, or retrying cut short, while the batch goes on: when this run's own stop comes
        // before the window's end, it was this run that ran out of time, and the next delivery sends it.
        if ((!answer || answer.unfinished) && !watch.reason() && time.stopAtMs < batch.expiresAtMs) {
          left += 1;
          return;
        }
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
        if (checkpointed) answered += 1;
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

    let handingBack = false;
    let ran = false;
    try {
      // Every request settles before the run ends, so nothing of it goes on in the background.
      const outcomes = await Promise.allSettled(toRun.map(runOne));
      const rejected = outcomes.find((outcome) => outcome.status === 'rejected');
      if (rejected) throw rejected.reason;
      ran = true;
      handingBack = left > 0;
    } finally {
      watch.stop();
      time.stop();
      // Handing back, every finished line must be in a checkpoint: no result of this run will hold it.
      // A run that failed keeps what it finished for the next delivery too, if the store lets it.
      if (ran) await checkpoints.close({ flush: handingBack });
      else await checkpoints.close({ flush: true }).catch(() => undefined);
    }
    if (handingBack) {
      if (answered === 0) {
        throw new ChunkOutOfTime(`chunk ${chunk.index} ran out of time before any of its ${toRun.length} remaining requests finished`);
      }
      if (!deps.queue) throw new Error('a chunk ran out of time, and this worker has no queue to hand it back to');
      await discard(deps, result, new Error('handed back'));
      await deps.queue.enqueue([message], { delayMs: HAND_BACK_DELAY_MS });
      log.log('info', 'chunk handed back before the deadline', { batchId, chunk: chunk.index, answered, left });
      return 'handed_back';
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
    return 'done';
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
    // Recorded by another run, which may have stopped before it enqueued the successor.
    if (recorded.reason === 'duplicate') {
      const current = await meta.getBatch(batchId);
      if (current && RUNNING.includes(current.status)) await enqueueSuccessor(deps, message, current);
    }
    return;
  }
  // Before this delivery is acknowledged, so a crash cannot lose the successor.
  await enqueueSuccessor(deps, message, recorded.batch);
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

/** Plans are immutable once written: a few are kept, so a chunk's successor costs no read of its plan. */
const plans = new Map<string, Promise<StoredPlan | undefined>>();
const PLANS_KEPT = 32;

function planOf(blobs: BlobStore, batchId: string): Promise<StoredPlan | undefined> {
  let plan = plans.get(batchId);
  if (!plan) {
    plan = readPlan(blobs, batchId);
    plan.catch(() => plans.delete(batchId));
    plans.set(batchId, plan);
    if (plans.size > PLANS_KEPT) plans.delete(plans.keys().next().value!);
  }
  return plan;
}

/** Puts the chunk that recording this one made due in the window on the queue. */
async function enqueueSuccessor(deps: ChunkWorkerDeps, message: ChunkMessage, batch: BatchRecord): Promise<void> {
  const window = deps.chunkWindow;
  if (window === undefined || !deps.queue || message.chunk.index + window >= batch.chunkCount) return;
  const plan = await planOf(deps.blobs, batch.id);
  const next = plan && successorChunk(plan.chunks, message.chunk.index, new Set(batch.doneChunks), window);
  if (next) await deps.queue.enqueue([chunkMessage(batch, message.inputBlobKey, next)]);
}

function errorName(error: unknown): string {
  return error instanceof Error ? error.name : 'unknown error';
}

/**
 * The run's own deadline: past `stopAtMs` no request starts; at `abortAtMs` the signal aborts the
 * requests still on the wire. Without a deadline, neither ever comes.
 */
function deadlineWatch(deps: ChunkWorkerDeps, deadlineMs: number | undefined) {
  if (deadlineMs === undefined) {
    return { stopAtMs: Infinity, signal: undefined, outOfTime: () => false, stop: () => {} };
  }
  const abort = new AbortController();
  const now = deps.clock.now();
  const { stopAtMs, abortAtMs } = handBackTimes(now, deadlineMs, deps.upstreamTimeoutMs ?? Infinity);
  const stopped = new AbortController();
  void deps.clock.sleep(abortAtMs - now, stopped.signal).then(() => {
    if (!stopped.signal.aborted) abort.abort(new ChunkOutOfTime('the run is out of time'));
  });
  return {
    stopAtMs,
    signal: abort.signal,
    outOfTime: () => abort.signal.aborted || deps.clock.now() >= stopAtMs,
    stop: () => stopped.abort(),
  };
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
