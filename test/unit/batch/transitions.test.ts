import { describe, expect, it } from 'vitest';
import { BATCH_STATUSES, type BatchRecord, type BatchStatus, TERMINAL_STATUSES } from '../../../shared/batch/model.js';
import { advance, canTransition, TRANSITIONS, transition } from '../../../shared/batch/transitions.js';
import { BatchStatusConflict, type MetaStore, type StatusChange } from '../../../shared/ports.js';
import { batchRecord } from '../../adapters/meta-store-contract.js';

/** The two MetaStore methods transitions use, over a Map, with the same compare-and-set. */
function fakeMeta(...batches: BatchRecord[]) {
  const records = new Map(batches.map((batch) => [batch.id, batch]));
  const changes: StatusChange[] = [];
  const meta: Pick<MetaStore, 'getBatch' | 'transitionBatch'> = {
    getBatch: async (id) => records.get(id),
    transitionBatch: async (id, change) => {
      const current = records.get(id);
      if (current?.status !== change.from) throw new BatchStatusConflict(id, current);
      const moved = { ...current, ...change.changes, status: change.to };
      records.set(id, moved);
      changes.push(change);
      return moved;
    },
  };
  return { meta, records, changes };
}

const clock = { now: () => 1_000 };

describe('the transitions table', () => {
  it('lets no final batch move, and every other status reach a final one', () => {
    for (const status of TERMINAL_STATUSES) expect(TRANSITIONS[status]).toEqual([]);
    const reachesFinal = (status: BatchStatus, seen = new Set<BatchStatus>()): boolean =>
      TERMINAL_STATUSES.includes(status) ||
      TRANSITIONS[status].some((next) => !seen.has(next) && reachesFinal(next, new Set([...seen, status])));
    for (const status of BATCH_STATUSES) expect(reachesFinal(status)).toBe(true);
  });

  it('has no cycle, so a batch enters each status at most once', () => {
    const visit = (status: BatchStatus, path: BatchStatus[]): void => {
      expect(path).not.toContain(status);
      for (const next of TRANSITIONS[status]) visit(next, [...path, status]);
    };
    visit('validating', []);
  });

  it('lets every unfinished batch fail, and only finalization end it otherwise', () => {
    for (const status of BATCH_STATUSES.filter((s) => !TERMINAL_STATUSES.includes(s))) expect(canTransition(status, 'failed')).toBe(true);
    for (const final of ['completed', 'expired', 'cancelled'] as const) {
      expect(BATCH_STATUSES.filter((s) => canTransition(s, final))).toEqual(['finalizing']);
    }
  });
});

describe('transition', () => {
  it('stamps the time the batch entered the status and appends its event', async () => {
    const batch = batchRecord({ status: 'in_progress' });
    const { meta, changes } = fakeMeta(batch);
    const moved = await transition({ meta, clock }, batch, 'cancelling');
    expect(moved.status).toBe('cancelling');
    expect(moved.cancellingAtMs).toBe(1_000);
    expect(changes[0]!.event).toMatchObject({
      type: 'batch.cancelling',
      batchId: batch.id,
      project: batch.project,
      status: 'cancelling',
      previousStatus: 'in_progress',
      atMs: 1_000,
    });
    expect(changes[0]!.event.id).toMatch(/^evt_[A-Za-z0-9]{24}$/);
  });

  it('refuses a move the table does not allow, before writing anything', async () => {
    const batch = batchRecord({ status: 'completed' });
    const { meta, changes } = fakeMeta(batch);
    await expect(transition({ meta, clock }, batch, 'cancelling')).rejects.toThrow(/no transition from completed to cancelling/);
    expect(changes).toEqual([]);
  });

  it('raises the conflict with the batch as it now is when the status moved meanwhile', async () => {
    const batch = batchRecord({ status: 'in_progress' });
    const { meta, records } = fakeMeta(batch);
    records.set(batch.id, { ...batch, status: 'finalizing' });
    const error = await transition({ meta, clock }, batch, 'cancelling').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BatchStatusConflict);
    expect((error as BatchStatusConflict).current?.status).toBe('finalizing');
  });
});

describe('advance', () => {
  it('moves from whatever status the batch is in, when the table allows it', async () => {
    const batch = batchRecord({ status: 'validating' });
    const { meta } = fakeMeta(batch);
    expect((await advance({ meta, clock }, batch.id, 'cancelling'))?.status).toBe('cancelling');
    expect(await advance({ meta, clock }, batch.id, 'in_progress')).toBeUndefined();
    expect(await advance({ meta, clock }, 'batch_missing', 'failed')).toBeUndefined();
  });

  it('reads again after losing a race and moves from the new status if it still may', async () => {
    const batch = batchRecord({ status: 'validating' });
    const { meta, records } = fakeMeta(batch);
    const racing = {
      ...meta,
      getBatch: async (id: string) => {
        const seen = await meta.getBatch(id);
        // Another process starts the batch right after this one read it.
        if (seen?.status === 'validating') records.set(id, { ...seen, status: 'in_progress' });
        return seen;
      },
    };
    const moved = await advance({ meta: racing, clock }, batch.id, 'cancelling');
    expect(moved?.status).toBe('cancelling');
  });
});
