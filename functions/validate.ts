// Step Functions task "Validate": reads the batch's input file once, streaming, and either fails
// the batch with every bad line or plans its chunks and moves it to in_progress. The Choice state
// after it branches on `status`.
import { validateStep } from '../shared/batch/steps.js';
import type { BatchExecutionInput, ValidateOutput } from './contract.js';
import { lambdaHandler } from './observability.js';
import { runtime } from './runtime.js';

export const handler = lambdaHandler('validate', async (event: BatchExecutionInput): Promise<ValidateOutput> => {
  const rt = await runtime();
  const status = await validateStep(rt.domain.steps, event.batchId);
  if (!status) rt.log.log('warn', 'no such batch; the execution ends', { batchId: event.batchId });
  // A batch that does not exist has nothing to finalize: end the execution as for a failed one.
  return { batchId: event.batchId, status: status ?? 'failed' };
});
