// The start sweep: a batch is created, then its lifecycle is started (create.ts). Should the start
// fail after its retries (Step Functions throttling or down) or the process die between the two,
// the batch sits in `validating` with nothing to move it. Every few minutes (a scheduled function
// in AWS, a timer in `npm start`) this finds such batches: one older than `afterMs` with no
// execution is started again (the start is idempotent: the execution is named for the batch), and
// one still without an execution after `giveUpAfterMs`, or whose execution ended while it was still
// validating, ends `failed` with the reason, through the transitions table.
import { errorMessage, type Logger } from '../log.js';
import { BatchStatusConflict, type BlobStore, type Clock, type Lifecycle, type MetaStore } from '../ports.js';
import { releaseInputFile } from './input-file.js';
import type { BatchLineError, BatchRecord } from './model.js';
import { transition } from './transitions.js';

export interface StartSweepDeps {
  meta: MetaStore;
  blobs: BlobStore;
  clock: Pick<Clock, 'now'>;
  log: Logger;
  lifecycle: Pick<Lifecycle, 'start' | 'state'>;
  onTransition?: (batch: BatchRecord) => void;
}

export interface StartSweepOptions {
  /** A validating batch younger than this is left alone: its start may still be under way. */
  afterMs: number;
  /** A validating batch older than this that still has no execution ends failed. */
  giveUpAfterMs: number;
}

export interface StartSweepResult {
  /** Batches whose lifecycle this sweep started. */
  started: string[];
  /** Batches this sweep ended failed. */
  failed: string[];
}

export const NOT_STARTED_CODE = 'batch_not_started';

function notStartedError(reason: 'gave_up' | 'ended', giveUpAfterMs: number): BatchLineError {
  const minutes = Math.round(giveUpAfterMs / 60_000);
  return {
    code: NOT_STARTED_CODE,
    message:
      reason === 'ended'
        ? 'The batch could not be started: its lifecycle execution ended while the batch was still validating.'
        : `The batch could not be started: no lifecycle execution ran for it within ${minutes} minutes of its creation.`,
    param: null,
    line: null,
  };
}

export async function sweepUnstartedBatches(deps: StartSweepDeps, options: StartSweepOptions): Promise<StartSweepResult> {
  const result: StartSweepResult = { started: [], failed: [] };
  const now = deps.clock.now();
  const stranded = (await deps.meta.listUnfinishedBatches()).filter(
    (batch) => batch.status === 'validating' && now - batch.createdAtMs >= options.afterMs,
  );
  for (const batch of stranded) {
    try {
      const state = await deps.lifecycle.state(batch.id);
      if (state === 'running') continue;
      if (state === 'ended' || now - batch.createdAtMs >= options.giveUpAfterMs) {
        if (await failUnstarted(deps, batch, notStartedError(state === 'ended' ? 'ended' : 'gave_up', options.giveUpAfterMs))) {
          result.failed.push(batch.id);
        }
        continue;
      }
      await deps.lifecycle.start(batch.id);
      result.started.push(batch.id);
      deps.log.log('warn', 'the start sweep started a batch that had no lifecycle execution', { batchId: batch.id });
    } catch (error) {
      // The next sweep tries again; after giveUpAfterMs it fails the batch.
      deps.log.log('error', 'the start sweep could not move a batch', { batchId: batch.id, error: errorMessage(error) });
    }
  }
  return result;
}

/** validating → failed, only while it is still validating (the index the sweep read lags the table). */
async function failUnstarted(deps: StartSweepDeps, batch: BatchRecord, entry: BatchLineError): Promise<boolean> {
  try {
    const failed = await transition(deps, batch, 'failed', { errors: [entry] });
    deps.log.log('error', 'a batch never started; it ends failed', { batchId: batch.id });
    await releaseInputFile(deps, failed);
    return true;
  } catch (error) {
    if (error instanceof BatchStatusConflict) return false;
    throw error;
  }
}
