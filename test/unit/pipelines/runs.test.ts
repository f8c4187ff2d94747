// Pipeline runs over the real DynamoDB adapters (on dynalite) and the filesystem store: a trigger
// delivered twice makes one batch, a bad source fails its run and creates nothing, a run whose
// importer died is taken over and makes the same batch, and destinations are written, retried and
// parked when they keep failing.
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DynamoMetaStore } from '../../../shared/adapters/aws/dynamo-meta-store.js';
import { DynamoPipelineRunStore } from '../../../shared/adapters/aws/dynamo-pipeline-runs.js';
import { type EmbeddedDynamo, startEmbeddedDynamo } from '../../../shared/adapters/local/embedded-dynamo.js';
import { FsBlobStore } from '../../../shared/adapters/local/fs-blob-store.js';
import { blobKeys } from '../../../shared/batch/keys.js';
import { batchEvent } from '../../../shared/events/model.js';
import { silentLogger } from '../../../shared/log.js';
import { type PipelineDefinition, parsePipelines } from '../../../shared/pipelines/config.js';
import { destinationSubscriber } from '../../../shared/pipelines/destinations.js';
import { runBatchId, runId, runInputFileId } from '../../../shared/pipelines/model.js';
import { manualTrigger, objectTrigger, type RunDeps, resumeRun, scheduledTrigger, startRun } from '../../../shared/pipelines/run.js';
import type { BlobStore } from '../../../shared/ports.js';

const LIMITS = {
  maxFileBytes: 1024 * 1024,
  maxLineBytes: 64 * 1024,
  maxRequestsPerBatch: 100,
  minCompletionWindowMs: 3_600_000,
  maxCompletionWindowMs: 336 * 3_600_000,
};
const line = (id: string) =>
  JSON.stringify({ custom_id: id, method: 'POST', url: '/v1/chat/completions', body: { model: 'm', messages: [] } });

let dynamo: EmbeddedDynamo;
let root: string;
let deps: RunDeps;
let meta: DynamoMetaStore;
let runs: DynamoPipelineRunStore;
const started: string[] = [];
let nightly: PipelineDefinition;
let drop: PipelineDefinition;
const now = Date.parse('2026-12-03T01:00:00Z');

async function put(key: string, text: string): Promise<void> {
  await mkdir(dirname(join(root, key)), { recursive: true });
  await writeFile(join(root, key), text);
}

beforeAll(async () => {
  dynamo = await startEmbeddedDynamo({ tableName: `pipelines-${process.pid}-${Date.now()}` });
  root = await mkdtemp(join(tmpdir(), 'pipelines-'));
  meta = new DynamoMetaStore({ client: dynamo.client, tableName: dynamo.tableName });
  runs = new DynamoPipelineRunStore({ client: dynamo.client, tableName: dynamo.tableName });
  const objects = new FsBlobStore(root);
  deps = {
    meta,
    runs,
    blobs: new FsBlobStore(join(root, 'blobs')),
    clock: { now: () => now },
    lifecycle: { start: async (id) => void started.push(id) },
    log: silentLogger,
    objects: () => objects,
    limits: LIMITS,
  };
  [nightly, drop] = parsePipelines([
    {
      name: 'nightly',
      project: 'reviews',
      schedule: 'cron(0 2 * * ? *)',
      timeZone: 'Europe/Paris',
      source: 'inbox/reviews/{yyyy}-{MM}-{dd}.jsonl',
      destination: 'outbox/reviews/nightly/',
      endpoint: '/v1/chat/completions',
      metadata: { job: 'reviews' },
    },
    {
      name: 'drop',
      project: 'reviews',
      trigger: 'object-created',
      source: 'inbox/reviews/drop/',
      destination: 'outbox/reviews/drop/',
      endpoint: '/v1/chat/completions',
    },
  ]) as [PipelineDefinition, PipelineDefinition];
});

afterAll(async () => {
  await dynamo?.close();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('a pipeline run', () => {
  it("imports the day's file and creates one batch, however often the trigger comes", async () => {
    await put('inbox/reviews/2026-12-03.jsonl', `${line('a')}\n${line('b')}\n`);
    const trigger = scheduledTrigger(Date.parse('2026-12-03T01:00:00Z'));
    const [first, second] = await Promise.all([startRun(deps, nightly, trigger), startRun(deps, nightly, trigger)]);
    const outcomes = [first!, second!];
    expect(outcomes.filter((o) => o.duplicate)).toHaveLength(1);
    const made = outcomes.find((o) => !o.duplicate)!.run;
    expect(made).toMatchObject({ status: 'submitted', source: 'inbox/reviews/2026-12-03.jsonl', batchId: runBatchId(made.id) });
    expect(made.destination).toBe(`outbox/reviews/nightly/${made.id}/`);
    const again = await startRun(deps, nightly, trigger);
    expect(again).toEqual({ run: made, duplicate: true });
    expect(started.filter((id) => id === made.batchId)).toHaveLength(1);

    const batch = await meta.getBatch(made.batchId!);
    expect(batch).toMatchObject({ project: 'reviews', endpoint: '/v1/chat/completions', completionWindow: '24h', status: 'validating' });
    expect({ ...batch!.metadata }).toEqual({
      job: 'reviews',
      pipeline: 'nightly',
      pipeline_run: made.id,
      pipeline_run_at: '2026-12-03T01:00:00.000Z',
    });
    const file = await meta.getFile('reviews', made.inputFileId!);
    expect(file).toMatchObject({
      purpose: 'batch',
      filename: '2026-12-03.jsonl',
      bytes: (await readFile(join(root, 'inbox/reviews/2026-12-03.jsonl'))).length,
    });
    // Another project sees no such file.
    expect(await meta.getFile('other', made.inputFileId!)).toBeUndefined();
  });

  it('fails clearly on a file that is no batch input, and creates no file and no batch', async () => {
    await put('inbox/reviews/drop/bad.jsonl', 'this is not jsonl\n');
    const { run } = await startRun(deps, drop, objectTrigger('inbox/reviews/drop/bad.jsonl', 'v1', now));
    expect(run.status).toBe('failed');
    expect(run.error).toEqual({
      code: 'invalid_file_format',
      message: expect.stringMatching(/^The source object inbox\/reviews\/drop\/bad\.jsonl is refused: The file is not JSONL/),
    });
    expect(await meta.getFile('reviews', runInputFileId(run.id))).toBeUndefined();
    expect(await deps.blobs.size(blobKeys.file(runInputFileId(run.id)))).toBeUndefined();
    expect(await meta.getBatch(runBatchId(run.id))).toBeUndefined();
    // Its summary says why, where the results would have gone.
    const summary = JSON.parse(await readFile(join(root, run.destination, 'summary.json'), 'utf8'));
    expect(summary).toMatchObject({ status: 'failed', batch_id: null, error: run.error, source: 'inbox/reviews/drop/bad.jsonl' });
    // A repeat of the trigger changes nothing; the next file still runs.
    expect((await startRun(deps, drop, objectTrigger('inbox/reviews/drop/bad.jsonl', 'v1', now))).duplicate).toBe(true);
    await put('inbox/reviews/drop/good.jsonl', `${line('x')}\n`);
    expect((await startRun(deps, drop, objectTrigger('inbox/reviews/drop/good.jsonl', 'v1', now))).run.status).toBe('submitted');
  });

  it('fails a run whose source is missing, too large or has too many requests, each with its code', async () => {
    const missing = await startRun(deps, nightly, scheduledTrigger(Date.parse('2026-12-09T01:00:00Z')));
    expect(missing.run.error).toEqual({
      code: 'source_not_found',
      message: 'The source object inbox/reviews/2026-12-09.jsonl does not exist.',
    });
    await put('inbox/reviews/drop/many.jsonl', `${Array.from({ length: 101 }, (_, i) => line(`r${i}`)).join('\n')}\n`);
    expect((await startRun(deps, drop, objectTrigger('inbox/reviews/drop/many.jsonl', 'v1', now))).run.error?.code).toBe('too_many_tasks');
    await put('inbox/reviews/drop/empty.jsonl', '');
    expect((await startRun(deps, drop, objectTrigger('inbox/reviews/drop/empty.jsonl', 'v1', now))).run.error?.code).toBe('empty_file');
  });

  it('refuses a key outside the pipeline, and a run by hand of a drop pipeline needs its key', async () => {
    await expect(startRun(deps, drop, objectTrigger('inbox/other/x.jsonl', 'v1', now))).rejects.toThrow(
      /is not an object under inbox\/reviews\/drop\//,
    );
    await expect(startRun(deps, drop, manualTrigger(now, 'k'))).rejects.toThrow(/name the object's key/);
    const byHand = await startRun(deps, drop, manualTrigger(now, 'k2', 'inbox/reviews/drop/good.jsonl'));
    expect(byHand.run).toMatchObject({ trigger: 'manual', status: 'submitted' });
  });

  it('is taken over after its importer died, and makes the same batch', async () => {
    await put('inbox/reviews/2026-12-04.jsonl', `${line('a')}\n`);
    const trigger = scheduledTrigger(Date.parse('2026-12-04T01:00:00Z'));
    // An importer that stopped with the run claimed: storage failed under it.
    const broken: RunDeps = {
      ...deps,
      blobs: {
        ...deps.blobs,
        put: async () => Promise.reject(new Error('disk gone')),
        delete: async () => undefined,
      } as unknown as BlobStore,
    };
    await expect(startRun(broken, nightly, trigger)).rejects.toThrow('disk gone');
    const { run } = await startRun(deps, nightly, trigger);
    expect(run.status).toBe('submitted');
    // A process that stopped after creating the batch, before recording the run as submitted.
    const trigger5 = scheduledTrigger(Date.parse('2026-12-05T01:00:00Z'));
    await put('inbox/reviews/2026-12-05.jsonl', `${line('a')}\n`);
    const stopping: RunDeps = {
      ...deps,
      runs: {
        ...runs,
        createRun: (r) => runs.createRun(r),
        getRun: (id) => runs.getRun(id),
        updateRun: (id, from, changes) =>
          changes.status === 'submitted' ? Promise.reject(new Error('stopped')) : runs.updateRun(id, from, changes),
      } as typeof runs,
    };
    await expect(startRun(stopping, nightly, trigger5)).rejects.toThrow('stopped');
    // Its claim still held when the process died.
    const held = (await runs.updateRun(runId('reviews', 'nightly', trigger5.key), ['importing'], { claimUntilMs: now + 3_600_000 }))!;
    expect(await meta.getBatch(runBatchId(held.id))).toMatchObject({ status: 'validating' });
    expect((await startRun(deps, nightly, trigger5)).duplicate).toBe(true);
    const before = started.length;
    const resumed = await resumeRun(deps, nightly, held);
    expect(resumed).toMatchObject({ status: 'submitted', batchId: runBatchId(held.id), inputFileId: runInputFileId(held.id) });
    // The batch that was never started is started now; a second resume does nothing.
    expect(started.slice(before)).toEqual([runBatchId(held.id)]);
    expect(await resumeRun(deps, nightly, held)).toBeUndefined();
  });
});

describe('the destinations subscriber', () => {
  async function endedRun(day: string) {
    await put(`inbox/reviews/${day}.jsonl`, `${line('a')}\n`);
    const { run } = await startRun(deps, nightly, scheduledTrigger(Date.parse(`${day}T01:00:00Z`)));
    const batch = (await meta.getBatch(run.batchId!))!;
    await deps.blobs.put(blobKeys.file('file-outputX'), '{"custom_id":"a"}\n');
    const ended = { ...batch, status: 'completed' as const, outputFileId: 'file-outputX', total: 1, completed: 1, completedAtMs: now };
    return { run, batch: ended, event: batchEvent(ended, 'completed', 'finalizing', now) };
  }

  it('writes output, errors and summary.json under the run, once', async () => {
    const parked: unknown[] = [];
    const subscriber = destinationSubscriber({ ...deps, deadLetters: { park: async (m) => void parked.push(m) } });
    const { run, batch, event } = await endedRun('2026-12-06');
    // Only the final events write.
    await subscriber.handle(batchEvent(batch, 'in_progress', 'validating', now), batch);
    expect(await deps.objects(undefined).size(`${run.destination}summary.json`)).toBeUndefined();
    await subscriber.handle(event, batch);
    expect(await readFile(join(root, run.destination, 'output.jsonl'), 'utf8')).toBe('{"custom_id":"a"}\n');
    expect(await readFile(join(root, run.destination, 'errors.jsonl'), 'utf8')).toBe('');
    const summary = JSON.parse(await readFile(join(root, run.destination, 'summary.json'), 'utf8'));
    expect(summary).toMatchObject({
      batch_id: batch.id,
      status: 'completed',
      request_counts: { total: 1, completed: 1, failed: 0 },
      source: 'inbox/reviews/2026-12-06.jsonl',
      pipeline: 'nightly',
      run_id: run.id,
    });
    expect((await runs.getRun(run.id))!.status).toBe('delivered');
    // A repeat of the event (at-least-once) writes nothing again.
    await rm(join(root, run.destination), { recursive: true });
    await subscriber.handle(event, batch);
    expect(await deps.objects(undefined).size(`${run.destination}summary.json`)).toBeUndefined();
    expect(parked).toEqual([]);
  });

  it("ignores a client's batch that copies a run's metadata", async () => {
    const subscriber = destinationSubscriber({ ...deps, deadLetters: { park: async () => undefined } });
    const { run, batch, event } = await endedRun('2026-12-07');
    const impostor = { ...batch, id: 'batch_impostor000000000000000000', project: 'other' };
    await subscriber.handle(event, impostor);
    expect((await runs.getRun(run.id))!.status).toBe('submitted');
  });

  it('retries a failing destination, then parks it on the dead letters and lets the events go on', async () => {
    const parked: Record<string, unknown>[] = [];
    const failing = { ...deps.objects(undefined), put: async () => Promise.reject(new Error('AccessDenied')) } as unknown as BlobStore;
    const subscriber = destinationSubscriber({
      ...deps,
      objects: () => failing,
      deadLetters: { park: async (m) => void parked.push(m) },
      maxAttempts: 3,
    });
    const { run, batch, event } = await endedRun('2026-12-08');
    await expect(subscriber.handle(event, batch)).rejects.toThrow('AccessDenied');
    await expect(subscriber.handle(event, batch)).rejects.toThrow('AccessDenied');
    expect((await runs.getRun(run.id))!).toMatchObject({
      status: 'submitted',
      deliveryAttempts: 2,
      error: { code: 'destination_write_failed' },
    });
    await subscriber.handle(event, batch);
    expect((await runs.getRun(run.id))!).toMatchObject({ status: 'delivery_failed', deliveryAttempts: 3 });
    expect(parked).toEqual([
      expect.objectContaining({ reason: 'destination_write_failed', run_id: run.id, batch_id: batch.id, attempts: 3 }),
    ]);
  });
});
