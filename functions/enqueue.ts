// Step Functions task "Enqueue": one SQS message for every chunk without a recorded outcome, and
// how long the next state waits for the chunks: what is left of the window, plus time for the
// requests in flight when it closes to finish; and that drain time alone, which is how long the
// state machine waits after a cancel.
import { enqueueStep } from '../shared/batch/steps.js';
import type { BatchExecutionInput, EnqueueOutput } from './contract.js';
import { lambdaHandler } from './observability.js';
import { runtime } from './runtime.js';

export const handler = lambdaHandler('enqueue', async (event: BatchExecutionInput): Promise<EnqueueOutput> => {
  const rt = await runtime();
  const chunks = await enqueueStep(rt.domain.steps, event.batchId);
  const batch = await rt.meta.getBatch(event.batchId);
  const leftMs = (batch?.expiresAtMs ?? rt.clock.now()) - rt.clock.now();
  const waitSeconds = Math.max(1, Math.ceil((leftMs + rt.domain.drainMs) / 1000));
  const drainSeconds = Math.max(1, Math.ceil(rt.domain.drainMs / 1000));
  rt.log.log('info', 'chunks enqueued', { batchId: event.batchId, chunks, waitSeconds, drainSeconds });
  return { batchId: event.batchId, waitSeconds, drainSeconds };
});
