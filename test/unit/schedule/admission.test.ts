// Admission and the chunk window over the embedded adapters (dynalite, the filesystem): a batch
// over what is left of its project's quota waits with nothing queued and starts when the earlier
// batch ends; a batch's chunks go on the queue a window at a time, each recorded chunk putting the
// next on; quota held by a batch that ended without giving it back (a crash) is reclaimed; and the
// estimate a batch shows.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DynamoMetaStore } from '../../../shared/adapters/aws/dynamo-meta-store.js';
import { DynamoQuotaStore } from '../../../shared/adapters/aws/dynamo-quotas.js';
import { type EmbeddedDynamo, startEmbeddedDynamo } from '../../../shared/adapters/local/embedded-dynamo.js';
import { FsBlobStore } from '../../../shared/adapters/local/fs-blob-store.js';
import { blobKeys } from '../../../shared/batch/keys.js';
import type { BatchRecord } from '../../../shared/batch/model.js';
import { enqueueStep, finalizeStep, type StepDeps, validateStep } from '../../../shared/batch/steps.js';
import { silentLogger } from '../../../shared/log.js';
import type { ChunkMessage, Clock, Lifecycle } from '../../../shared/ports.js';
import { estimateBatch } from '../../../shared/schedule/eta.js';
import type { Upstream, UpstreamRouter } from '../../../shared/upstream/types.js';
import { runChunk } from '../../../shared/work/run-chunk.js';
import { batchRecord, fileRecord } from '../../adapters/meta-store-contract.js';

const line = (id: string) =>
  JSON.stringify({
    custom_id: id,
    method: 'POST',
    url: '/v1/chat/completions',
    body: { model: 'm', messages: [{ role: 'user', content: id }] },
  });

describe('admission and the chunk window', () => {
  let dynamo: EmbeddedDynamo;
  let dir: string;
  let deps: StepDeps;
  let quotas: DynamoQuotaStore;
  let sent: ChunkMessage[];
  let now: number;
  let project: string;
  let seq = 0;

  const clock: Clock = { now: () => now, sleep: async () => {} };
  const upstream: Upstream = {
    async send(_request, { mayStart }) {
      if (!mayStart()) return undefined;
      return {
        kind: 'response',
        statusCode: 200,
        requestId: 'r',
        body: { usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } },
      };
    },
  };
  const router: UpstreamRouter = { route: () => upstream, routeOf: () => 'default' };
  const lifecycle: Lifecycle = {
    start: async () => {},
    state: async () => 'running',
    cancelled: async () => {},
    allChunksDone: async () => {},
  };

  beforeAll(async () => {
    dynamo = await startEmbeddedDynamo({});
  });
  afterAll(async () => {
    await dynamo.close();
  });
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'admission-'));
    sent = [];
    now = 1_000_000;
    project = `p${seq++}`;
    quotas = new DynamoQuotaStore({ client: dynamo.client, tableName: dynamo.tableName });
    deps = {
      meta: new DynamoMetaStore({ client: dynamo.client, tableName: dynamo.tableName, now: () => now }),
      quotas,
      quotaConfig: { defaults: { requests: 6 }, projects: {}, routes: {} },
      blobs: new FsBlobStore(dir),
      queue: { enqueue: async (messages) => void sent.push(...messages) },
      upstreams: router,
      clock,
      log: silentLogger,
      limits: { maxRequestsPerBatch: 1_000, maxLineBytes: 10_000 },
      chunking: { maxRequests: 2, maxBytes: 1_000_000 },
      chunkWindow: 2,
    };
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function validated(lines: number, overrides: Partial<BatchRecord> = {}): Promise<BatchRecord> {
    const file = fileRecord({ project, createdAtMs: now, expiresAtMs: null });
    file.blobKey = blobKeys.file(file.id);
    await deps.blobs.put(file.blobKey, `${Array.from({ length: lines }, (_, i) => line(`r${i}`)).join('\n')}\n`);
    await deps.meta.putFile(file);
    const batch = batchRecord({
      project,
      inputFileId: file.id,
      status: 'validating',
      createdAtMs: now++,
      expiresAtMs: now + 600_000,
      ...overrides,
    });
    await deps.meta.createBatch(batch);
    await deps.meta.pinFile(project, file.id, batch.id);
    expect(await validateStep(deps, batch.id)).toBe('in_progress');
    return (await deps.meta.getBatch(batch.id))!;
  }

  const worker = () => ({ ...deps, lifecycle, upstreams: router, chunkWindow: 2 });
  async function runAll(batchId: string): Promise<void> {
    for (let message = sent.shift(); message; message = sent.shift()) {
      if (message.batchId === batchId) await runChunk(worker(), message);
      else sent.push(message);
      if (!sent.some((m) => m.batchId === batchId)) break;
    }
  }

  it('puts a window of chunks on the queue, and each recorded chunk puts the next on', async () => {
    const batch = await validated(6);
    expect(batch.chunkCount).toBe(3);
    expect(await enqueueStep(deps, batch.id)).toBe(2);
    expect(sent.map((m) => m.chunk.index)).toEqual([0, 1]);
    expect(sent[0]).toMatchObject({ project, batchId: batch.id });
    await runChunk(worker(), sent.shift()!);
    expect(sent.map((m) => m.chunk.index)).toEqual([1, 2]);
    // A redelivery of the recorded chunk puts its successor on again (a crash may have lost it); it runs once.
    await runChunk(worker(), {
      batchId: batch.id,
      inputBlobKey: sent[0]!.inputBlobKey,
      chunk: { index: 0, start: 0, end: 1, requests: 2 },
      project,
    });
    expect(sent.map((m) => m.chunk.index)).toEqual([1, 2, 2]);
    await runAll(batch.id);
    expect((await deps.meta.getBatch(batch.id))!.doneChunks).toEqual([0, 1, 2]);
  });

  it('holds a batch over what is left of the quota, and starts it when the earlier batch ends', async () => {
    const first = await validated(4);
    expect(first.quotaKeys).toEqual([`project:${project}`]);
    expect(await enqueueStep(deps, first.id)).toBe(2);
    const second = await validated(4);
    expect(await enqueueStep(deps, second.id)).toBe(0);
    const waiting = (await deps.meta.getBatch(second.id))!;
    expect(waiting.admittedAtMs).toBeUndefined();
    expect(estimateBatch(waiting, await deps.meta.listUnfinishedBatches(project), now)).toMatchObject({
      reason: 'waiting for project quota',
    });
    expect(await quotas.getQuota(`project:${project}`)).toEqual({ requests: 4, tokens: first.estimatedTokens, holders: [first.id] });

    await runAll(first.id);
    expect(sent).toEqual([]);
    expect(await finalizeStep(deps, first.id)).toBe('completed');
    // The end gave the quota back and admitted the waiting batch: its window is on the queue.
    expect(sent.map((m) => `${m.batchId === second.id ? 'second' : 'other'}:${m.chunk.index}`)).toEqual(['second:0', 'second:1']);
    expect((await quotas.getQuota(`project:${project}`))?.holders).toEqual([second.id]);
    await runAll(second.id);
    expect(await finalizeStep(deps, second.id)).toBe('completed');
    // Again is harmless: nothing is given back twice.
    expect(await finalizeStep(deps, second.id)).toBe('completed');
    expect(await quotas.getQuota(`project:${project}`)).toEqual({ requests: 0, tokens: 0, holders: [] });
  });

  it('admits a waiting batch once when two batches of its project end at the same instant', async () => {
    const [one, two] = [await validated(2), await validated(2)];
    expect(await enqueueStep(deps, one.id)).toBe(1);
    expect(await enqueueStep(deps, two.id)).toBe(1);
    const waiting = await validated(4);
    expect(await enqueueStep(deps, waiting.id)).toBe(0);
    await runAll(one.id);
    await runAll(two.id);
    expect(sent).toEqual([]);

    expect(await Promise.all([finalizeStep(deps, one.id), finalizeStep(deps, two.id)])).toEqual(['completed', 'completed']);
    // Its window went on the queue once, not once per end.
    expect(sent.map((m) => `${m.batchId === waiting.id ? 'waiting' : 'other'}:${m.chunk.index}`)).toEqual(['waiting:0', 'waiting:1']);
    expect((await quotas.getQuota(`project:${project}`))?.holders).toEqual([waiting.id]);
  });

  it('reclaims quota a final batch still holds (a crash between its end and the give-back)', async () => {
    const ended = batchRecord({ project, status: 'completed', total: 5, estimatedTokens: 0, quotaKeys: [`project:${project}`] });
    await deps.meta.createBatch(ended);
    expect(await quotas.takeQuota(`project:${project}`, ended.id, { requests: 5, tokens: 0 }, { requests: 6 })).toBe('taken');
    const batch = await validated(4);
    expect(await enqueueStep(deps, batch.id)).toBe(2);
    expect((await quotas.getQuota(`project:${project}`))?.holders).toEqual([batch.id]);
  });

  it('refuses at validation a batch larger than the quota itself', async () => {
    const file = fileRecord({ project, createdAtMs: now, expiresAtMs: null });
    file.blobKey = blobKeys.file(file.id);
    await deps.blobs.put(file.blobKey, `${Array.from({ length: 7 }, (_, i) => line(`r${i}`)).join('\n')}\n`);
    await deps.meta.putFile(file);
    const batch = batchRecord({ project, inputFileId: file.id, status: 'validating', createdAtMs: now, expiresAtMs: now + 60_000 });
    await deps.meta.createBatch(batch);
    expect(await validateStep(deps, batch.id)).toBe('failed');
    expect((await deps.meta.getBatch(batch.id))!.errors?.[0]).toMatchObject({ code: 'quota_exceeded' });
  });
});

describe('estimateBatch', () => {
  const base = (overrides: Partial<BatchRecord>): BatchRecord =>
    batchRecord({
      project: 'p',
      status: 'in_progress',
      createdAtMs: 0,
      admittedAtMs: 0,
      total: 100,
      completed: 0,
      failed: 0,
      ...overrides,
    });

  it('projects a running batch from its own rate, and a new one from its share of the project’s', () => {
    const running = base({ id: 'batch_a', completed: 50 });
    // 50 lines in 10 s: 50 more take 10 s.
    expect(estimateBatch(running, [running], 10_000)).toEqual({ completionAtMs: 20_000 });
    const fresh = base({ id: 'batch_b', createdAtMs: 5_000, admittedAtMs: 9_000 });
    // It shares the project's 5 lines/s with the one running: 100 lines at 2.5/s.
    expect(estimateBatch(fresh, [running, fresh], 10_000)).toEqual({ completionAtMs: 50_000, reason: 'queued behind 1 batch' });
  });

  it('gives no estimate while nothing is measured, and none for an ended batch', () => {
    const fresh = base({ id: 'batch_a' });
    expect(estimateBatch(fresh, [fresh], 10_000)).toEqual({});
    expect(estimateBatch(base({ status: 'completed', completed: 100 }), [], 10_000)).toEqual({});
  });
});
