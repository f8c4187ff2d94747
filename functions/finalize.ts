// Step Functions task "Finalize": merges the recorded chunks' results into the output and error
// files (streaming), puts every line that never ran in the error file, and ends the batch
// completed, expired, cancelled or failed. Runs again safely after a retry. As state "FailBatch"
// (the Catch of a step whose retries are spent) it ends the batch failed instead.

import { failBatchStep, finalizeStep } from '../shared/batch/steps.js';
import type { FinalizeInput, ValidateOutput } from './contract.js';
import { lambdaHandler } from './observability.js';
import { runtime } from './runtime.js';

export const handler = lambdaHandler('finalize', async (event: FinalizeInput): Promise<ValidateOutput> => {
  const rt = await runtime();
  if (event.failure) {
    // The cause (the failed step's own error and trace) is for the operator: the batch says only which step failed.
    rt.log.log('error', 'a lifecycle step failed after its retries', {
      batchId: event.batchId,
      error: event.failure.Error,
      cause: event.failure.Cause?.slice(0, 2_000),
    });
  }
  const status = event.failure
    ? await failBatchStep(rt.domain.steps, event.batchId, { error: event.failure.Error ?? 'States.TaskFailed' })
    : await finalizeStep(rt.domain.steps, event.batchId);
  return { batchId: event.batchId, status: status ?? 'failed' };
});
