// Step "FailBatch": a lifecycle step failed for good (its retries are spent). The batch ends
// `failed`, with the reason in its errors, and lets go of its input file, so no batch is left in a
// status nothing will move it from.
import { errorMessage } from '../log.js';
import { finalizeStep } from './finalize.js';
import { releaseInputFile } from './input-file.js';
import { type BatchLineError, type BatchStatus, TERMINAL_STATUSES } from './model.js';
import { releaseQuota, type StepDeps } from './steps.js';
import { advance } from './transitions.js';

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
 * A batch whose chunks may have run is finalized as failed (answered lines kept, every other line in
 * the error file as batch_failed); when that fails too, or when validation or finalization is what
 * failed, it ends failed without output and error files.
 */
export async function failBatchStep(deps: StepDeps, batchId: string, failure: StepFailure): Promise<BatchStatus | undefined> {
  const { meta, log } = deps;
  const batch = await meta.getBatch(batchId);
  if (!batch) return undefined;
  if (TERMINAL_STATUSES.includes(batch.status)) {
    await releaseInputFile(deps, batch);
    await releaseQuota(deps, batch);
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
  const failed = await advance(deps, batchId, 'failed', { errors });
  if (!failed) return (await meta.getBatch(batchId))?.status;
  await releaseInputFile(deps, failed);
  await releaseQuota(deps, failed);
  // Its scratch (plan, chunk results, checkpoints) serves no one now; the S3 lifecycle rule would reap it too.
  await deps.blobs
    .list(`batches/${batchId}/`)
    .then((keys) => deps.blobs.delete(keys))
    .catch((error: unknown) => log.log('warn', 'scratch cleanup of a failed batch failed', { batchId, error: errorMessage(error) }));
  return failed.status;
}
