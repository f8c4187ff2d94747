// Behaviour every PipelineRunStore must have: the conditional creation that makes a trigger delivered
// twice act once, the take-over of a run whose importer died, status compare-and-sets, listing.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PipelineRunRecord, runId } from '../../shared/pipelines/model.js';
import type { PipelineRunStore } from '../../shared/ports.js';
import { race } from '../support/race.js';

let seq = 0;
export function runRecord(overrides: Partial<PipelineRunRecord> = {}): PipelineRunRecord {
  const project = overrides.project ?? `proj-${process.pid}-${Date.now()}-${seq++}`;
  const pipeline = overrides.pipeline ?? 'nightly';
  const runKey = overrides.runKey ?? `schedule:${new Date(Date.UTC(2026, 11, 3, 2) + seq * 60_000).toISOString()}`;
  const createdAtMs = overrides.createdAtMs ?? Date.now() + seq;
  return {
    id: runId(project, pipeline, runKey),
    project,
    pipeline,
    trigger: 'schedule',
    runKey,
    runAtMs: createdAtMs,
    source: 'inbox/reviews/2026-12-03.jsonl',
    destination: 'outbox/reviews/run/',
    status: 'importing',
    batchId: null,
    inputFileId: null,
    error: null,
    claimUntilMs: createdAtMs + 60_000,
    deliveryAttempts: 0,
    createdAtMs,
    updatedAtMs: createdAtMs,
    ...overrides,
  };
}

export function pipelineRunStoreContract(
  name: string,
  setup: () => Promise<{ store: PipelineRunStore; close(): Promise<void> }>,
  /**
   * serializeWritesToOneItem: the backend lets two conditional writes to one item both pass (moto),
   * where DynamoDB does not: the racing case sends its creates one at a time and expects the same.
   */
  options: { serializeWritesToOneItem?: boolean } = {},
) {
  describe(`${name}: the PipelineRunStore contract`, () => {
    let store: PipelineRunStore;
    let close: () => Promise<void>;
    beforeAll(async () => {
      ({ store, close } = await setup());
    });
    afterAll(async () => {
      await close?.();
    });

    it('creates a run once: a second create with the same id writes nothing and answers the first', async () => {
      const first = runRecord();
      expect(await store.createRun(first)).toEqual({ created: true, run: first });
      const repeat = { ...first, source: 'other', createdAtMs: first.createdAtMs + 5 };
      expect(await store.createRun(repeat)).toEqual({ created: false, run: first });
      expect(await store.getRun(first.id)).toEqual(first);
    });

    it('lets exactly one of two racing creates of one run win, and both answer the winner', async () => {
      const run = runRecord();
      const outcomes = await race(
        [() => store.createRun(run), () => store.createRun({ ...run, source: 'b' })],
        options.serializeWritesToOneItem ?? false,
      );
      expect(outcomes.filter((o) => o.created)).toHaveLength(1);
      const winner = outcomes.find((o) => o.created)!.run;
      expect(outcomes.map((o) => o.run)).toEqual([winner, winner]);
    });

    it('takes over an importing run only once its claim has lapsed', async () => {
      const run = runRecord({ claimUntilMs: 1_000 });
      await store.createRun(run);
      expect(await store.takeOverRun(run.id, 999, 5_000)).toBeUndefined();
      const taken = await store.takeOverRun(run.id, 1_000, 5_000);
      expect(taken).toMatchObject({ id: run.id, claimUntilMs: 5_000, status: 'importing' });
      // The new claim holds against a second taker.
      expect(await store.takeOverRun(run.id, 1_000, 9_000)).toBeUndefined();
      await store.updateRun(run.id, ['importing'], { status: 'submitted' });
      expect(await store.takeOverRun(run.id, 10_000, 20_000)).toBeUndefined();
      expect(await store.takeOverRun(runRecord().id, 10_000, 20_000)).toBeUndefined();
    });

    it('updates a run only from the statuses named, and never creates one', async () => {
      const run = runRecord();
      await store.createRun(run);
      const submitted = await store.updateRun(run.id, ['importing'], { status: 'submitted', batchId: 'batch_x', inputFileId: 'file-x' });
      expect(submitted).toEqual({ ...run, status: 'submitted', batchId: 'batch_x', inputFileId: 'file-x' });
      expect(await store.updateRun(run.id, ['importing'], { status: 'failed' })).toBeUndefined();
      const failed = await store.updateRun(run.id, ['submitted', 'importing'], {
        status: 'delivery_failed',
        error: { code: 'destination_write_failed', message: 'denied' },
        deliveryAttempts: 5,
      });
      expect(failed).toMatchObject({
        status: 'delivery_failed',
        error: { code: 'destination_write_failed', message: 'denied' },
        deliveryAttempts: 5,
      });
      expect(await store.getRun(run.id)).toEqual(failed);
      const missing = runRecord();
      expect(await store.updateRun(missing.id, ['importing'], { status: 'failed' })).toBeUndefined();
      expect(await store.getRun(missing.id)).toBeUndefined();
    });

    it("lists a pipeline's runs newest first, page by page, and no other pipeline's or project's", async () => {
      const project = `list-${Date.now()}-${seq++}`;
      const runs = [1, 2, 3].map((i) => runRecord({ project, runKey: `k${i}`, createdAtMs: 1_000_000 + i }));
      for (const run of runs) await store.createRun(run);
      await store.createRun(runRecord({ project, pipeline: 'other', runKey: 'k9' }));
      await store.createRun(runRecord({ pipeline: 'nightly', runKey: 'k1' }));
      const first = await store.listRuns(project, 'nightly', { limit: 2 });
      expect(first.items.map((r) => r.runKey)).toEqual(['k3', 'k2']);
      expect(first.hasMore).toBe(true);
      const second = await store.listRuns(project, 'nightly', { limit: 2, after: first.items[1]!.id });
      expect(second).toEqual({ items: [runs[0]], hasMore: false });
      expect(await store.listRuns('nobody', 'nightly', { limit: 2 })).toEqual({ items: [], hasMore: false });
      // Another project's run as a cursor names nothing here.
      expect(await store.listRuns('nobody', 'nightly', { limit: 2, after: runs[0]!.id })).toEqual({ items: [], hasMore: false });
    });
  });
}
