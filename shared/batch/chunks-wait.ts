// While a batch's chunks run, the lifecycle waits (a task token in AWS, a timer locally) and decides
// on each signal what comes next; both runtimes decide here.
import { waitsForQuota } from '../schedule/quota.js';
import type { BatchRecord } from './model.js';

/**
 * - `finalize`: every chunk is recorded, or the batch is no longer running;
 * - `drain`: it was cancelled: wait only as long as the drain time, for the requests in flight;
 * - `wait`: wait for the chunks, at most until the window closes (and then the drain time).
 */
export type ChunksWait = 'finalize' | 'drain' | 'wait';

export function chunksWait(
  batch: (Pick<BatchRecord, 'status' | 'doneChunks' | 'chunkCount'> & Partial<Pick<BatchRecord, 'quotaKeys' | 'admittedAtMs'>>) | undefined,
): ChunksWait {
  if (!batch || (batch.status !== 'in_progress' && batch.status !== 'cancelling')) return 'finalize';
  if (batch.doneChunks.length >= batch.chunkCount) return 'finalize';
  // Cancelled while it waited for its project's quota: none of its chunks ever ran, nothing to drain.
  if (batch.status === 'cancelling' && waitsForQuota(batch)) return 'finalize';
  return batch.status === 'cancelling' ? 'drain' : 'wait';
}

/** When the wait ends whatever the chunks do: the drain time after a cancel, or after the window closes. */
export function waitDeadlineMs(batch: Pick<BatchRecord, 'cancellingAtMs' | 'expiresAtMs'>, drainMs: number): number {
  return (batch.cancellingAtMs ?? batch.expiresAtMs) + drainMs;
}
