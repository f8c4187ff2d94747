// Step Functions tasks "WaitForChunks" and "DrainAfterCancel" (.waitForTaskToken): stores the task
// token on the batch, so the last worker can send task success and a cancel task failure. Either
// may have happened before the token was stored (they then had no token to use), so this looks at
// the batch right after storing it, in the same conditional write, and answers the token itself
// when the chunks are all done or the batch is cancelling. A batch that is no longer running moves
// on to Finalize.
//
// Draining (DrainAfterCancel): the batch is cancelling, which here is no reason to fail. The workers
// start no new request, finish those in flight and record their chunks; the last one sends task
// success with this token, or the drain time runs out.
import { chunksWait } from '../shared/batch/chunks-wait.js';
import type { WaitForChunksInput } from './contract.js';
import { lambdaHandler } from './observability.js';
import { runtime } from './runtime.js';

export const handler = lambdaHandler('wait-for-chunks', async (event: WaitForChunksInput): Promise<void> => {
  const rt = await runtime();
  const { batchId, taskToken, draining = false } = event;
  const batch = await rt.meta.updateBatch(batchId, ['in_progress', 'cancelling'], { taskToken });
  switch (chunksWait(batch)) {
    case 'finalize':
      if (!batch) rt.log.log('info', 'batch no longer running; finalizing', { batchId });
      await rt.lifecycle.succeed(taskToken, batchId);
      return;
    case 'drain':
      // Cancelled: the first wait fails on it (the state machine moves on to DrainAfterCancel); the
      // drain's own wait leaves the token to the last worker, or to its timeout.
      if (draining)
        rt.log.log('info', 'cancelled; waiting for the chunks in flight', {
          batchId,
          chunks: batch!.chunkCount - batch!.doneChunks.length,
        });
      else await rt.lifecycle.fail(taskToken, batchId);
      return;
    case 'wait':
      return;
  }
});
