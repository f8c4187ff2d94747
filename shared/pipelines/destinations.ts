// Destinations: when a pipeline's batch ends, its output and error files and a summary are written
// under the run's destination prefix:
//
//   <destination><run id>/output.jsonl   the batch's output file (empty when it has none)
//   <destination><run id>/errors.jsonl   the batch's error file (empty when it has none)
//   <destination><run id>/summary.json   written last: status, counts, usage, timings, source
//
// An events subscriber (shared/runtime/subscribers.ts), placed before the webhooks and the event
// bus, so the files are there when a receiver hears that the batch ended. A write that fails leaves
// the event for the next drain (a retry); after MAX_DELIVERY_ATTEMPTS the run is marked
// delivery_failed, parked on the dead letters (an SQS queue with an alarm in AWS) and logged as an
// error, and the batch's events go on: a destination never holds them back for good.
import { blobKeys } from '../batch/keys.js';
import { type BatchRecord, TERMINAL_STATUSES } from '../batch/model.js';
import type { EventSubscriber } from '../events/dispatcher.js';
import { errorMessage, type Logger } from '../log.js';
import { BlobNotFoundError, type BlobStore, type Clock, type DeadLetters, type PipelineRunStore } from '../ports.js';
import { parseLocation, RUN_METADATA } from './config.js';
import { type PipelineRunRecord, RUN_ID_SHAPE } from './model.js';

export const MAX_DELIVERY_ATTEMPTS = 5;
export const RESULT_FILES = { output: 'output.jsonl', errors: 'errors.jsonl', summary: 'summary.json' } as const;

export interface DestinationDeps {
  blobs: BlobStore;
  runs: PipelineRunStore;
  clock: Pick<Clock, 'now'>;
  log: Logger;
  objects(bucket: string | undefined): BlobStore;
  deadLetters: DeadLetters;
  maxAttempts?: number;
}

const seconds = (ms: number | null | undefined) => (ms === null || ms === undefined ? null : Math.floor(ms / 1000));

/** summary.json: what a pipeline downstream needs without asking the API. */
export function runSummary(run: PipelineRunRecord, batch: BatchRecord | undefined) {
  const endedAtMs = batch ? (batch.completedAtMs ?? batch.failedAtMs ?? batch.expiredAtMs ?? batch.cancelledAtMs) : run.updatedAtMs;
  return {
    object: 'pipeline.run.summary',
    pipeline: run.pipeline,
    project: run.project,
    run_id: run.id,
    trigger: run.trigger,
    run_at: new Date(run.runAtMs).toISOString(),
    source: run.source,
    destination: run.destination,
    batch_id: batch?.id ?? null,
    input_file_id: run.inputFileId,
    status: batch?.status ?? run.status,
    error: batch ? null : run.error,
    errors: batch?.errors ?? null,
    request_counts: batch
      ? { total: batch.total, completed: batch.completed, failed: batch.failed }
      : { total: 0, completed: 0, failed: 0 },
    usage: batch
      ? {
          input_tokens: batch.usage.inputTokens,
          input_tokens_details: { cached_tokens: batch.usage.cachedTokens },
          output_tokens: batch.usage.outputTokens,
          output_tokens_details: { reasoning_tokens: batch.usage.reasoningTokens },
          total_tokens: batch.usage.totalTokens,
        }
      : null,
    output_file_id: batch?.outputFileId ?? null,
    error_file_id: batch?.errorFileId ?? null,
    files: batch ? { output: RESULT_FILES.output, errors: RESULT_FILES.errors } : null,
    timings: {
      created_at: seconds(batch?.createdAtMs ?? run.createdAtMs),
      in_progress_at: seconds(batch?.inProgressAtMs),
      finalizing_at: seconds(batch?.finalizingAtMs),
      ended_at: seconds(endedAtMs),
      duration_seconds: endedAtMs === null ? null : Math.round((endedAtMs - (batch?.createdAtMs ?? run.createdAtMs)) / 1000),
    },
  };
}

async function copyFile(deps: DestinationDeps, store: BlobStore, fileId: string | null, key: string): Promise<void> {
  let body: AsyncIterable<Uint8Array> | string = '';
  if (fileId) {
    try {
      body = await deps.blobs.get(blobKeys.file(fileId));
    } catch (error) {
      // The user deleted the file before the event went out: an empty file says there is nothing to read.
      if (!(error instanceof BlobNotFoundError)) throw error;
    }
  }
  await store.put(key, body);
}

/** Writes the batch's results under the run's destination; summary.json last, so its presence means the rest is there. */
export async function writeResults(deps: DestinationDeps, run: PipelineRunRecord, batch: BatchRecord): Promise<void> {
  const destination = parseLocation(run.destination);
  const store = deps.objects(destination.bucket);
  await copyFile(deps, store, batch.outputFileId, `${destination.key}${RESULT_FILES.output}`);
  await copyFile(deps, store, batch.errorFileId, `${destination.key}${RESULT_FILES.errors}`);
  await store.put(`${destination.key}${RESULT_FILES.summary}`, `${JSON.stringify(runSummary(run, batch), null, 2)}\n`);
}

/** A run that failed before it had a batch still leaves its summary (status failed, and why). */
export async function writeFailureSummary(deps: Pick<DestinationDeps, 'objects'>, run: PipelineRunRecord): Promise<void> {
  const destination = parseLocation(run.destination);
  await deps
    .objects(destination.bucket)
    .put(`${destination.key}${RESULT_FILES.summary}`, `${JSON.stringify(runSummary(run, undefined), null, 2)}\n`);
}

/** The run a batch was made by, when it was: the batch's metadata names it, and the run must name the batch back. */
async function runOf(deps: DestinationDeps, batch: BatchRecord): Promise<PipelineRunRecord | undefined> {
  const id = batch.metadata?.[RUN_METADATA.run];
  if (id === undefined || !RUN_ID_SHAPE.test(id)) return undefined;
  const run = await deps.runs.getRun(id);
  // A client's batch that copies a run's metadata writes nowhere.
  return run && run.batchId === batch.id && run.project === batch.project ? run : undefined;
}

export function destinationSubscriber(deps: DestinationDeps): EventSubscriber {
  const maxAttempts = deps.maxAttempts ?? MAX_DELIVERY_ATTEMPTS;
  return {
    name: 'pipeline-destinations',
    async handle(event, batch) {
      if (!(TERMINAL_STATUSES as readonly string[]).includes(event.status)) return;
      const run = await runOf(deps, batch);
      if (run?.status !== 'submitted') return; // not a pipeline's, or written already (a repeat)
      try {
        await writeResults(deps, run, batch);
      } catch (error) {
        const attempts = run.deliveryAttempts + 1;
        const reason = {
          code: 'destination_write_failed',
          message: `Writing the results to ${run.destination} failed: ${errorMessage(error)}`,
        };
        if (attempts < maxAttempts) {
          await deps.runs.updateRun(run.id, ['submitted'], { deliveryAttempts: attempts, error: reason, updatedAtMs: deps.clock.now() });
          deps.log.log('warn', 'pipeline destination write failed; it is tried again', { runId: run.id, attempts, error: reason.message });
          throw error;
        }
        await deps.deadLetters.park({
          reason: reason.code,
          message: reason.message,
          pipeline: run.pipeline,
          project: run.project,
          run_id: run.id,
          batch_id: batch.id,
          destination: run.destination,
          attempts,
        });
        await deps.runs.updateRun(run.id, ['submitted'], {
          status: 'delivery_failed',
          deliveryAttempts: attempts,
          error: reason,
          updatedAtMs: deps.clock.now(),
        });
        deps.log.log('error', 'pipeline destination write failed for good', {
          runId: run.id,
          batchId: batch.id,
          attempts,
          error: reason.message,
        });
        return;
      }
      await deps.runs.updateRun(run.id, ['submitted'], { status: 'delivered', error: null, updatedAtMs: deps.clock.now() });
      deps.log.log('info', 'pipeline results written', { runId: run.id, batchId: batch.id, destination: run.destination });
    },
  };
}
