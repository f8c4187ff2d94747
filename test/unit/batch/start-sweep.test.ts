// The start sweep with the local driver: a batch recorded but never started (the process died
// between the create and the start) is started once START_SWEEP_AFTER has passed and completes; one
// the driver still does not drive after START_SWEEP_GIVE_UP_AFTER ends failed with the reason; a
// batch the driver runs is left alone.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DynamoMetaStore } from '../../../shared/adapters/aws/dynamo-meta-store.js';
import { type EmbeddedDynamo, startEmbeddedDynamo } from '../../../shared/adapters/local/embedded-dynamo.js';
import { FsBlobStore } from '../../../shared/adapters/local/fs-blob-store.js';
import { LocalLifecycle } from '../../../shared/adapters/local/local-lifecycle.js';
import { LocalWorkQueue } from '../../../shared/adapters/local/local-work-queue.js';
import { systemClock } from '../../../shared/adapters/local/system-clock.js';
import { blobKeys } from '../../../shared/batch/keys.js';
import { sweepUnstartedBatches } from '../../../shared/batch/start-sweep.js';
import type { StepDeps } from '../../../shared/batch/steps.js';
import { silentLogger } from '../../../shared/log.js';
import { createUpstreamRouter } from '../../../shared/upstream/router.js';
import { runChunk } from '../../../shared/work/run-chunk.js';
import { batchRecord, fileRecord } from '../../adapters/meta-store-contract.js';

const MINUTE = 60_000;
const options = { afterMs: 5 * MINUTE, giveUpAfterMs: 60 * MINUTE };

describe('the start sweep, locally', () => {
  let dynamo: EmbeddedDynamo;
  let dir: string;
  let deps: StepDeps;
  let queue: LocalWorkQueue;
  let lifecycle: LocalLifecycle;

  beforeAll(async () => {
    dynamo = await startEmbeddedDynamo({});
    dir = await mkdtemp(path.join(os.tmpdir(), 'start-sweep-'));
    queue = new LocalWorkQueue({ concurrency: 2 });
    deps = {
      meta: new DynamoMetaStore({ client: dynamo.client, tableName: dynamo.tableName }),
      blobs: new FsBlobStore(dir),
      queue,
      upstreams: createUpstreamRouter(
        { baseUrl: undefined, apiKey: undefined, concurrency: 4, timeoutMs: 1_000, maxAttempts: 1, baseBackoffMs: 1 },
        systemClock,
      ),
      clock: systemClock,
      log: silentLogger,
      limits: { maxRequestsPerBatch: 100, maxLineBytes: 10_000 },
      chunking: { maxRequests: 2, maxBytes: 1_000_000 },
    };
    lifecycle = new LocalLifecycle(deps, { drainTimeoutMs: 60_000 });
    queue.start((message) => runChunk({ ...deps, lifecycle }, message));
  });
  afterAll(async () => {
    await lifecycle.stop();
    await queue.stop();
    await dynamo.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** A batch recorded `validating`, created `ageMs` ago, that nothing started. */
  async function stranded(ageMs: number) {
    const file = fileRecord({ project: 'p', createdAtMs: Date.now(), expiresAtMs: null });
    file.blobKey = blobKeys.file(file.id);
    await deps.blobs.put(
      file.blobKey,
      ['a', 'b', 'c']
        .map((id) =>
          JSON.stringify({ custom_id: id, method: 'POST', url: '/v1/chat/completions', body: { model: 'batch-test-model', messages: [] } }),
        )
        .join('\n'),
    );
    await deps.meta.putFile(file);
    const batch = batchRecord({
      project: 'p',
      inputFileId: file.id,
      status: 'validating',
      createdAtMs: Date.now() - ageMs,
      expiresAtMs: Date.now() + 3_600_000,
      total: 0,
      completed: 0,
      failed: 0,
      unrun: 0,
      chunkCount: 0,
      doneChunks: [],
      chunkAttempts: {},
      errors: null,
    });
    await deps.meta.createBatch(batch);
    await deps.meta.pinFile('p', file.id, batch.id);
    return batch;
  }

  async function until(id: string, status: string) {
    for (let i = 0; i < 200; i++) {
      const batch = await deps.meta.getBatch(id);
      if (batch?.status === status) return batch;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    throw new Error(`batch ${id} never became ${status}`);
  }

  const sweep = () => sweepUnstartedBatches({ ...deps, lifecycle }, options);

  it('starts a batch nothing drives once it is old enough, and it completes; a young one waits', async () => {
    const young = await stranded(MINUTE);
    const old = await stranded(6 * MINUTE);
    expect(await lifecycle.state(old.id)).toBe('none');
    const result = await sweep();
    expect(result.started).toContain(old.id);
    expect(result.started).not.toContain(young.id);
    expect(await until(old.id, 'completed')).toMatchObject({ completed: 3 });
    expect((await deps.meta.getBatch(young.id))?.status).toBe('validating');
  });

  it('ends failed, with the reason, a batch nothing drove within the give-up time, and lets go of its input', async () => {
    const batch = await stranded(61 * MINUTE);
    expect((await sweep()).failed).toContain(batch.id);
    const failed = await until(batch.id, 'failed');
    expect(failed.errors).toEqual([expect.objectContaining({ code: 'batch_not_started' })]);
    // No pin is left: a delete removes the file at once.
    expect(await deps.meta.deleteFile('p', batch.inputFileId)).toMatchObject({ blobInUse: false });
    expect((await sweep()).failed).not.toContain(batch.id);
  });
});
