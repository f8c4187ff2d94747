// Step Functions task "Finalize": merges the recorded chunks' results into the output and error
// files (streaming), puts every line that never ran in the error file, and ends the batch
// completed, expired or cancelled. Runs again safely after a retry.

import { finalizeStep } from '../shared/batch/steps.js';
import type { BatchExecutionInput, ValidateOutput } from './contract.js';
import { lambdaHandler } from './observability.js';
import { runtime } from './runtime.js';

export const handler = lambdaHandler('finalize', async (event: BatchExecutionInput): Promise<ValidateOutput> => {
  const rt = await runtime();
  const status = await finalizeStep(rt.steps, event.batchId);
  return { batchId: event.batchId, status: status ?? 'failed' };
});
