// The local driver under the Lifecycle contract: the real steps over the embedded DynamoDB and the
// filesystem, and the real chunk worker (against the built-in batch-test-model), which runs a
// batch's chunks only when the contract says the workers do.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { DynamoMetaStore } from '../../shared/adapters/aws/dynamo-meta-store.js';
import { type EmbeddedDynamo, startEmbeddedDynamo } from '../../shared/adapters/local/embedded-dynamo.js';
import { FsBlobStore } from '../../shared/adapters/local/fs-blob-store.js';
import { LocalLifecycle } from '../../shared/adapters/local/local-lifecycle.js';
import { systemClock } from '../../shared/adapters/local/system-clock.js';
import { blobKeys } from '../../shared/batch/keys.js';
import type { StepDeps } from '../../shared/batch/steps.js';
import { advance } from '../../shared/batch/transitions.js';
import { silentLogger } from '../../shared/log.js';
import type { ChunkMessage } from '../../shared/ports.js';
import { createUpstreamRouter } from '../../shared/upstream/router.js';
import { runChunk } from '../../shared/work/run-chunk.js';
import { lifecycleContract } from './lifecycle-contract.js';
import { batchRecord, fileRecord } from './meta-store-contract.js';

const line = (id: string) =>
  JSON.stringify({
    custom_id: id,
    method: 'POST',
    url: '/v1/chat/completions',
    body: { model: 'batch-test-model', messages: [{ role: 'user', content: id }] },
  });

let dynamo: EmbeddedDynamo;
let dir: string;
beforeAll(async () => {
  dynamo = await startEmbeddedDynamo({});
  dir = await mkdtemp(path.join(os.tmpdir(), 'lifecycle-contract-'));
});
afterAll(async () => {
  await dynamo?.close();
  await rm(dir, { recursive: true, force: true });
});

lifecycleContract('LocalLifecycle', async () => {
  const enqueued: ChunkMessage[] = [];
  const deps: StepDeps = {
    meta: new DynamoMetaStore({ client: dynamo.client, tableName: dynamo.tableName }),
    blobs: new FsBlobStore(dir),
    queue: { enqueue: async (messages) => void enqueued.push(...messages) },
    upstreams: createUpstreamRouter(
      { baseUrl: undefined, apiKey: undefined, concurrency: 4, timeoutMs: 1_000, maxAttempts: 1, baseBackoffMs: 1 },
      systemClock,
    ),
    clock: systemClock,
    log: silentLogger,
    limits: { maxRequestsPerBatch: 100, maxLineBytes: 10_000 },
    chunking: { maxRequests: 2, maxBytes: 1_000_000 },
  };
  const lifecycle = new LocalLifecycle(deps, { drainTimeoutMs: 60_000, retryDelayMs: 10 });
  return {
    lifecycle,
    async createBatch() {
      const file = fileRecord({ project: 'p', createdAtMs: Date.now(), expiresAtMs: null });
      file.blobKey = blobKeys.file(file.id);
      await deps.blobs.put(file.blobKey, ['a', 'b', 'c'].map(line).join('\n'));
      await deps.meta.putFile(file);
      const batch = batchRecord({
        project: 'p',
        inputFileId: file.id,
        status: 'validating',
        createdAtMs: Date.now(),
        expiresAtMs: Date.now() + 3_600_000,
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
      return batch.id;
    },
    status: async (id) => (await deps.meta.getBatch(id))?.status,
    waiting: async (id) => (await deps.meta.getBatch(id))?.status === 'in_progress' && enqueued.some((message) => message.batchId === id),
    async runAllChunks(id) {
      for (const message of enqueued.filter((m) => m.batchId === id)) await runChunk({ ...deps, lifecycle }, message);
    },
    async cancel(id) {
      const cancelling = await advance(deps, id, 'cancelling');
      if (!cancelling) throw new Error(`batch ${id} could not be cancelled`);
      return cancelling;
    },
    close: () => lifecycle.stop(),
  };
});
