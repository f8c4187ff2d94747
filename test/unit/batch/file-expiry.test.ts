// Expiry respects pins, locally: an input file that expires while its batch runs keeps its bytes
// and its record (the batch still reads it; the API no longer shows it) until the batch ends; the
// file sweep (dynalite has no TTL) deletes it only then. And the reaper's rule for AWS: a record
// the TTL removed is put back while a batch that has not ended pins it, its object deleted otherwise.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { DeleteItemCommand } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DynamoMetaStore } from '../../../shared/adapters/aws/dynamo-meta-store.js';
import { type EmbeddedDynamo, startEmbeddedDynamo } from '../../../shared/adapters/local/embedded-dynamo.js';
import { FsBlobStore } from '../../../shared/adapters/local/fs-blob-store.js';
import { LocalLifecycle } from '../../../shared/adapters/local/local-lifecycle.js';
import { systemClock } from '../../../shared/adapters/local/system-clock.js';
import { createBatch } from '../../../shared/batch/create.js';
import { PIN_MARGIN_MS, reapRemovedFile, sweepExpiredFiles } from '../../../shared/batch/file-expiry.js';
import { blobKeys } from '../../../shared/batch/keys.js';
import type { StepDeps } from '../../../shared/batch/steps.js';
import { silentLogger } from '../../../shared/log.js';
import type { ChunkMessage } from '../../../shared/ports.js';
import { createUpstreamRouter } from '../../../shared/upstream/router.js';
import { runChunk } from '../../../shared/work/run-chunk.js';
import { fileRecord } from '../../adapters/meta-store-contract.js';

const line = (id: string) =>
  JSON.stringify({ custom_id: id, method: 'POST', url: '/v1/chat/completions', body: { model: 'batch-test-model', messages: [] } });

describe('file expiry and pins', () => {
  let dynamo: EmbeddedDynamo;
  let dir: string;
  let deps: StepDeps;
  let lifecycle: LocalLifecycle;
  const enqueued: ChunkMessage[] = [];

  beforeAll(async () => {
    dynamo = await startEmbeddedDynamo({});
    dir = await mkdtemp(path.join(os.tmpdir(), 'file-expiry-'));
    deps = {
      meta: new DynamoMetaStore({ client: dynamo.client, tableName: dynamo.tableName }),
      blobs: new FsBlobStore(dir),
      // The workers run only when the test says so.
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
    lifecycle = new LocalLifecycle(deps, { drainTimeoutMs: 60_000 });
  });
  afterAll(async () => {
    await lifecycle.stop();
    await dynamo.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function inputFile(expiresInMs: number) {
    const file = fileRecord({ project: 'p', createdAtMs: Date.now(), expiresAtMs: Date.now() + expiresInMs });
    file.blobKey = blobKeys.file(file.id);
    await deps.blobs.put(file.blobKey, ['a', 'b', 'c'].map(line).join('\n'));
    await deps.meta.putFile(file);
    return file;
  }

  async function until(id: string, status: string) {
    for (let i = 0; i < 200; i++) {
      if ((await deps.meta.getBatch(id))?.status === status) return;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    throw new Error(`batch ${id} never became ${status}`);
  }

  it('an input that expires under its running batch survives until the batch ends, then the sweep deletes it', async () => {
    const file = await inputFile(400);
    const batch = await createBatch(
      { ...deps, lifecycle },
      {
        project: 'p',
        inputFileId: file.id,
        endpoint: '/v1/chat/completions',
        completionWindow: '24h',
        windowMs: 86_400_000,
        metadata: null,
        outputExpiresAfterSeconds: null,
      },
    );
    for (let i = 0; i < 200 && !enqueued.some((m) => m.batchId === batch.id); i++) await new Promise((r) => setTimeout(r, 25));
    await new Promise((resolve) => setTimeout(resolve, 450));
    // Expired: the API no longer sees it, and a sweep leaves it.
    expect(await deps.meta.getFile('p', file.id)).toBeUndefined();
    expect(await sweepExpiredFiles(deps)).toBe(0);
    expect(await deps.blobs.size(file.blobKey)).toBeGreaterThan(0);
    // The workers read it now, and the batch completes with every line.
    for (const message of enqueued.filter((m) => m.batchId === batch.id)) await runChunk({ ...deps, lifecycle }, message);
    await until(batch.id, 'completed');
    expect(await deps.meta.getBatch(batch.id)).toMatchObject({ completed: 3, failed: 0 });
    // Once the batch ends its pin is gone: the next sweep deletes the bytes and the record.
    expect(await sweepExpiredFiles(deps)).toBeGreaterThanOrEqual(1);
    expect(await deps.blobs.size(file.blobKey)).toBeUndefined();
    expect(await deps.meta.getInputFile('p', file.id)).toBeUndefined();
  });

  it("the reaper puts back a record a running batch pins, kept past that batch's end, and deletes the bytes of one no running batch pins", async () => {
    const kept = await inputFile(60_000);
    const running = await createBatch(
      { ...deps, lifecycle: { start: async () => undefined } },
      {
        project: 'p',
        inputFileId: kept.id,
        endpoint: '/v1/chat/completions',
        completionWindow: '24h',
        windowMs: 86_400_000,
        metadata: null,
        outputExpiresAfterSeconds: null,
      },
    );
    // As the TTL would: the record goes, and the reaper is told what it held.
    const ttlRemoves = (id: string) =>
      dynamo.client.send(new DeleteItemCommand({ TableName: dynamo.tableName, Key: { pk: { S: `FILE#${id}` } } }));
    await ttlRemoves(kept.id);
    expect(await deps.meta.getInputFile('p', kept.id)).toBeUndefined();
    expect(await reapRemovedFile(deps, { file: kept, pinnedBy: [running.id, 'batch_long_gone'] })).toBe('restored');
    expect(await deps.meta.getInputFile('p', kept.id)).toEqual(kept);
    expect(await deps.blobs.size(kept.blobKey)).toBeGreaterThan(0);
    expect(running.expiresAtMs + PIN_MARGIN_MS).toBeGreaterThan(Date.now());

    const gone = await inputFile(60_000);
    await ttlRemoves(gone.id);
    expect(await reapRemovedFile(deps, { file: gone, pinnedBy: ['batch_long_gone'] })).toBe('deleted');
    expect(await deps.blobs.size(gone.blobKey)).toBeUndefined();
  });
});
