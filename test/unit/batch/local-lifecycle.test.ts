// The local lifecycle driver: the full path from validating to completed, the drain timer that
// finalizes a batch whose chunks never report (a lost worker), as the state machine's timeout does,
// and a step that keeps failing, which ends the batch failed, as the state machine's Catch does.

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
import type { BatchRecord } from '../../../shared/batch/model.js';
import type { StepDeps } from '../../../shared/batch/steps.js';
import { silentLogger } from '../../../shared/log.js';
import type { BlobStore, WorkQueue } from '../../../shared/ports.js';
import { createUpstreamRouter } from '../../../shared/upstream/router.js';
import { runChunk } from '../../../shared/work/run-chunk.js';
import { batchRecord, fileRecord } from '../../adapters/meta-store-contract.js';

const testLine = (id: string) =>
  JSON.stringify({
    custom_id: id,
    method: 'POST',
    url: '/v1/chat/completions',
    body: { model: 'batch-test-model', messages: [{ role: 'user', content: id }] },
  });

describe('LocalLifecycle', () => {
  let dynamo: EmbeddedDynamo;
  let dir: string;

  beforeAll(async () => {
    dynamo = await startEmbeddedDynamo({});
    dir = await mkdtemp(path.join(os.tmpdir(), 'lifecycle-'));
  });
  afterAll(async () => {
    await dynamo.close();
    await rm(dir, { recursive: true, force: true });
  });

  function setup(
    queue: WorkQueue,
    drainTimeoutMs: number,
    options: { blobs?: BlobStore; retryDelayMs?: number; maxStepAttempts?: number } = {},
  ) {
    const deps: StepDeps = {
      meta: new DynamoMetaStore({ client: dynamo.client, tableName: dynamo.tableName }),
      blobs: options.blobs ?? new FsBlobStore(dir),
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
    return {
      deps,
      lifecycle: new LocalLifecycle(deps, { drainTimeoutMs, retryDelayMs: options.retryDelayMs, maxStepAttempts: options.maxStepAttempts }),
    };
  }

  async function create(deps: StepDeps, ids: string[], windowMs: number): Promise<BatchRecord> {
    const file = fileRecord({ project: 'p', createdAtMs: Date.now(), expiresAtMs: null });
    file.blobKey = blobKeys.file(file.id);
    await deps.blobs.put(file.blobKey, ids.map(testLine).join('\n'));
    await deps.meta.putFile(file);
    const batch = batchRecord({
      project: 'p',
      inputFileId: file.id,
      status: 'validating',
      createdAtMs: Date.now(),
      expiresAtMs: Date.now() + windowMs,
      total: 0,
      completed: 0,
      failed: 0,
      unrun: 0,
      chunkCount: 0,
      doneChunks: [],
      chunkAttempts: {},
      inProgressAtMs: null,
      finalizingAtMs: null,
      completedAtMs: null,
      cancellingAtMs: null,
      cancelledAtMs: null,
      expiredAtMs: null,
      failedAtMs: null,
    });
    await deps.meta.createBatch(batch);
    return batch;
  }

  async function until(deps: StepDeps, id: string, status: string, tries = 100) {
    for (let i = 0; i < tries; i++) {
      const batch = await deps.meta.getBatch(id);
      if (batch?.status === status) return batch;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(`batch ${id} never became ${status}`);
  }

  it('drives a batch from validating to completed through the queue', async () => {
    const queue = new LocalWorkQueue({ concurrency: 2 });
    const { deps, lifecycle } = setup(queue, 5_000);
    queue.start((message) => runChunk({ ...deps, lifecycle }, message));
    const batch = await create(deps, ['a', 'b', 'c', 'd', 'e'], 60_000);
    await lifecycle.start(batch.id);
    const done = await until(deps, batch.id, 'completed');
    expect(done).toMatchObject({ total: 5, completed: 5, failed: 0, chunkCount: 3 });
    await lifecycle.stop();
    await queue.stop();
  });

  it('finalizes as expired when the window and the drain time pass with chunks that never reported', async () => {
    const lost: WorkQueue = { enqueue: async () => {} };
    const { deps, lifecycle } = setup(lost, 100);
    const batch = await create(deps, ['a', 'b', 'c'], 200);
    await lifecycle.start(batch.id);
    const done = await until(deps, batch.id, 'expired');
    expect(done).toMatchObject({ total: 3, completed: 0, failed: 3, unrun: 3, outputFileId: null });
    expect(done.errorFileId).toBeTruthy();
    await lifecycle.stop();
  });

  it('resumes unfinished batches after a restart', async () => {
    const lost: WorkQueue = { enqueue: async () => {} };
    const first = setup(lost, 60_000);
    const batch = await create(first.deps, ['a', 'b', 'c'], 60_000);
    await first.lifecycle.start(batch.id);
    await until(first.deps, batch.id, 'in_progress');
    await first.lifecycle.stop();

    const queue = new LocalWorkQueue({ concurrency: 2 });
    const second = setup(queue, 60_000);
    queue.start((message) => runChunk({ ...second.deps, lifecycle: second.lifecycle }, message));
    expect(await second.lifecycle.resume()).toBeGreaterThanOrEqual(1);
    expect(await until(second.deps, batch.id, 'completed')).toMatchObject({ completed: 3 });
    await second.lifecycle.stop();
    await queue.stop();
  });

  it('ends the batch failed, input let go of, when a step fails on every try (it never stays finalizing)', async () => {
    // Finalization can never join the files: a finalize that cannot succeed.
    const blobs: BlobStore = Object.create(new FsBlobStore(dir), {
      concat: { value: () => Promise.reject(new RangeError('Invalid string length')) },
    });
    const queue = new LocalWorkQueue({ concurrency: 2 });
    const { deps, lifecycle } = setup(queue, 5_000, { blobs, retryDelayMs: 10, maxStepAttempts: 3 });
    queue.start((message) => runChunk({ ...deps, lifecycle }, message));
    const batch = await create(deps, ['a', 'b', 'c'], 60_000);
    await deps.meta.pinFile('p', batch.inputFileId, batch.id);
    await deps.meta.deleteFile('p', batch.inputFileId);
    await lifecycle.start(batch.id);
    const failed = await until(deps, batch.id, 'failed', 400);
    expect(failed.errors).toMatchObject([
      { code: 'finalization_failed', message: expect.stringContaining('finalization failed after its retries (RangeError)') },
    ]);
    expect(failed.failedAtMs).toEqual(expect.any(Number));
    // The input was deleted while pinned: letting go of the pin (just after the status) purges it.
    for (let i = 0; i < 200 && (await deps.meta.getInputFile('p', batch.inputFileId)); i++) await new Promise((r) => setTimeout(r, 25));
    expect(await deps.meta.getInputFile('p', batch.inputFileId)).toBeUndefined();
    await lifecycle.stop();
    await queue.stop();
  });
});
