// Every status a batch may move to from each status, and the one function that moves it. A status
// change is a compare-and-set on the batch's current status that also stamps the time of the new
// status and appends its event to the batch's outbox (shared/events), all in one write.
//
//   validating ──> in_progress ──> finalizing ──> completed | expired | cancelled
//        │              │               └──> failed (finalization cannot succeed)
//        │              ├──> cancelling ──> finalizing
//        ├──> cancelling└──> failed (a step or a chunk that retrying cannot mend)
//        └──> failed (invalid input, or a step that cannot succeed)
import { batchEvent } from '../events/model.js';
import { BatchStatusConflict, type Clock, type MetaStore, type StatusChanges } from '../ports.js';
import { type BatchRecord, type BatchStatus, TERMINAL_STATUSES } from './model.js';

export const TRANSITIONS: Readonly<Record<BatchStatus, readonly BatchStatus[]>> = {
  validating: ['in_progress', 'cancelling', 'failed'],
  in_progress: ['finalizing', 'cancelling', 'failed'],
  cancelling: ['finalizing', 'failed'],
  finalizing: ['completed', 'expired', 'cancelled', 'failed'],
  completed: [],
  failed: [],
  expired: [],
  cancelled: [],
};

/** The record field that holds when a batch entered each status. */
const ENTERED_AT = {
  validating: 'createdAtMs',
  in_progress: 'inProgressAtMs',
  finalizing: 'finalizingAtMs',
  completed: 'completedAtMs',
  failed: 'failedAtMs',
  expired: 'expiredAtMs',
  cancelling: 'cancellingAtMs',
  cancelled: 'cancelledAtMs',
} as const satisfies Record<BatchStatus, keyof BatchRecord>;

export function canTransition(from: BatchStatus, to: BatchStatus): boolean {
  return TRANSITIONS[from].includes(to);
}

export const isTerminal = (status: BatchStatus): boolean => TERMINAL_STATUSES.includes(status);

export interface TransitionDeps {
  meta: Pick<MetaStore, 'transitionBatch' | 'getBatch'>;
  clock: Pick<Clock, 'now'>;
  /** Told after each change, so that the outbox is dispatched soon rather than at the next sweep. */
  onTransition?: (batch: BatchRecord) => void;
}

/**
 * Moves `current` to `to`, applying `changes`, if the batch is still in `current.status`.
 * Throws BatchStatusConflict (carrying the batch as it now is) when it is not, and an Error when the
 * table does not allow the move: that is a bug in the caller, not a race.
 */
export async function transition(
  deps: TransitionDeps,
  current: Pick<BatchRecord, 'id' | 'project' | 'status'>,
  to: BatchStatus,
  changes: StatusChanges = {},
): Promise<BatchRecord> {
  if (!canTransition(current.status, to)) throw new Error(`batch ${current.id}: no transition from ${current.status} to ${to}`);
  const atMs = deps.clock.now();
  const moved = await deps.meta.transitionBatch(current.id, {
    from: current.status,
    to,
    changes: { [ENTERED_AT[to]]: atMs, ...changes },
    event: batchEvent(current, to, current.status, atMs),
  });
  deps.onTransition?.(moved);
  return moved;
}

/**
 * Moves the batch to `to` from whatever status it is in, if the table allows it from there: reads
 * it, and reads again after losing a race. Answers the moved batch, or undefined (with no change)
 * when the batch is missing or its status no longer allows the move.
 */
export async function advance(
  deps: TransitionDeps,
  batchId: string,
  to: BatchStatus,
  changes?: StatusChanges,
): Promise<BatchRecord | undefined> {
  let current = await deps.meta.getBatch(batchId);
  for (let attempt = 0; current && canTransition(current.status, to); attempt++) {
    try {
      return await transition(deps, current, to, changes);
    } catch (error) {
      // Statuses only move forward along the table, so a few rounds always settle.
      if (!(error instanceof BatchStatusConflict) || attempt >= TRANSITIONS_DEPTH) throw error;
      current = error.current;
    }
  }
  return undefined;
}

/** The longest path through the table: more lost races than this cannot happen. */
const TRANSITIONS_DEPTH = 4;
