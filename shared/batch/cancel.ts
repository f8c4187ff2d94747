// Cancelling a batch: `cancelling` at once (a batch still validating or running), then the lifecycle
// drains the requests in flight and finalizes it `cancelled`.
import type { Lifecycle } from '../ports.js';
import type { BatchRecord, BatchStatus } from './model.js';
import { advance, type TransitionDeps } from './transitions.js';

export class BatchNotCancellable extends Error {
  constructor(
    readonly batchId: string,
    readonly status: BatchStatus,
  ) {
    super(`Batch ${batchId} is ${status} and can no longer be cancelled.`);
    this.name = 'BatchNotCancellable';
  }
}

/** Answers the batch as it is once cancelling (again is harmless); throws BatchNotCancellable once it is too late. */
export async function cancelBatch(deps: TransitionDeps & { lifecycle: Lifecycle }, batch: BatchRecord): Promise<BatchRecord> {
  if (batch.status === 'cancelling' || batch.status === 'cancelled') return batch;
  const cancelling = await advance(deps, batch.id, 'cancelling');
  if (cancelling) {
    // The signal goes to the wait this very change saw, never to one that started after it.
    await deps.lifecycle.cancelled(cancelling);
    return cancelling;
  }
  const current = (await deps.meta.getBatch(batch.id)) ?? batch;
  if (current.status === 'cancelling' || current.status === 'cancelled') return current;
  throw new BatchNotCancellable(batch.id, current.status);
}
