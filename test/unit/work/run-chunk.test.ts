// The chunk worker with answers that are huge, and with chunks that keep failing: memory stays
// within the in-flight budget whatever the chunk holds, a chunk that fails on every delivery is
// given up (its lines accounted for, the batch ends failed), and a step that fails for good ends
// its batch failed. Every custom_id lands exactly once in every case.

import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DynamoMetaStore } from '../../../shared/adapters/aws/dynamo-meta-store.js';
import { type EmbeddedDynamo, startEmbeddedDynamo } from '../../../shared/adapters/local/embedded-dynamo.js';
import { FsBlobStore } from '../../../shared/adapters/local/fs-blob-store.js';
import { systemClock } from '../../../shared/adapters/local/system-clock.js';
import { blobKeys } from '../../../shared/batch/keys.js';
import { enqueueStep, failBatchStep, finalizeStep, type StepDeps, validateStep } from '../../../shared/batch/steps.js';
import { advance } from '../../../shared/batch/transitions.js';
import { silentLogger } from '../../../shared/log.js';
import type { BlobStore, ChunkMessage, Lifecycle } from '../../../shared/ports.js';
import { HttpUpstream } from '../../../shared/upstream/http-upstream.js';
import { ResponseBudget } from '../../../shared/upstream/response-budget.js';
import type { Upstream, UpstreamRouter } from '../../../shared/upstream/types.js';
import { ChunkOutOfTime, type ChunkWorkerDeps, giveUpChunk, handBackTimes, runChunk } from '../../../shared/work/run-chunk.js';
import { batchRecord, fileRecord } from '../../adapters/meta-store-contract.js';
import { startUpstreamSim, type UpstreamSim } from '../../support/upstream-sim.js';

const MB = 1024 * 1024;
const line = (id: string) =>
  JSON.stringify({
    custom_id: id,
    method: 'POST',
    url: '/v1/chat/completions',
    body: { model: 'm', messages: [{ role: 'user', content: id }] },
  });
const ids = (n: number, prefix = 'r') => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

describe('the chunk worker, with huge answers and chunks that keep failing', () => {
  let dynamo: EmbeddedDynamo;
  let sim: UpstreamSim;
  let dir: string;
  let deps: StepDeps;
  let sent: ChunkMessage[];
  let doneSignals: string[];
  const lifecycle: Lifecycle = {
    start: async () => {},
    state: async () => 'running',
    cancelled: async () => {},
    allChunksDone: async (id) => void doneSignals.push(id),
  };

  beforeAll(async () => {
    dynamo = await startEmbeddedDynamo({});
    sim = await startUpstreamSim();
  });
  afterAll(async () => {
    await sim.close();
    await dynamo.close();
  });
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'run-chunk-'));
    sent = [];
    doneSignals = [];
    sim.configure({ answerBytes: undefined, failWhen: undefined, latencyMs: 0, hangRate: 0 });
    sim.reset();
    deps = {
      meta: new DynamoMetaStore({ client: dynamo.client, tableName: dynamo.tableName }),
      blobs: new FsBlobStore(dir),
      queue: { enqueue: async (messages) => void sent.push(...messages) },
      upstreams: { route: () => undefined },
      clock: systemClock,
      log: silentLogger,
      limits: { maxRequestsPerBatch: 1_000, maxLineBytes: 10_000 },
      chunking: { maxRequests: 100, maxBytes: 1_000_000 },
    };
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  function simRouter(options: { maxResponseBytes?: number; concurrency?: number } = {}): UpstreamRouter {
    const upstream = new HttpUpstream({
      baseUrl: sim.baseURL,
      apiKey: undefined,
      concurrency: options.concurrency ?? 8,
      timeoutMs: 10_000,
      maxAttempts: 1,
      clock: systemClock,
      maxResponseBytes: options.maxResponseBytes ?? 64 * MB,
    });
    return { route: () => upstream };
  }

  const worker = (upstreams: UpstreamRouter, extra: Partial<ChunkWorkerDeps> = {}): ChunkWorkerDeps => ({
    meta: deps.meta,
    blobs: deps.blobs,
    lifecycle,
    upstreams,
    clock: systemClock,
    log: silentLogger,
    ...extra,
  });

  async function startBatch(customIds: string[], chunkMaxRequests = 100): Promise<string> {
    deps.chunking = { maxRequests: chunkMaxRequests, maxBytes: 1_000_000 };
    deps.upstreams = { route: (model) => (model === 'm' ? ({} as Upstream) : undefined) };
    const file = fileRecord({ project: 'p', createdAtMs: Date.now(), expiresAtMs: null });
    file.blobKey = blobKeys.file(file.id);
    await deps.blobs.put(file.blobKey, `${customIds.map(line).join('\n')}\n`);
    await deps.meta.putFile(file);
    const batch = batchRecord({
      project: 'p',
      inputFileId: file.id,
      status: 'validating',
      createdAtMs: Date.now(),
      expiresAtMs: Date.now() + 600_000,
      total: 0,
      completed: 0,
      failed: 0,
      unrun: 0,
      chunkCount: 0,
      doneChunks: [],
      chunkAttempts: {},
    });
    await deps.meta.createBatch(batch);
    await deps.meta.pinFile('p', file.id, batch.id);
    expect(await validateStep(deps, batch.id)).toBe('in_progress');
    await enqueueStep(deps, batch.id);
    return batch.id;
  }

  /** The lines of a batch's output or error file, without keeping their bodies. */
  async function linesOf(fileId: string | null): Promise<{ customId: string; status?: number; code?: string; bytes: number }[]> {
    if (!fileId) return [];
    const file = (await deps.meta.getFile('p', fileId))!;
    const pieces: Buffer[] = [];
    for await (const piece of await deps.blobs.get(file.blobKey)) pieces.push(Buffer.from(piece));
    const text = Buffer.concat(pieces).toString('utf8');
    return text
      .split('\n')
      .filter(Boolean)
      .map((raw) => {
        const parsed = JSON.parse(raw);
        return { customId: parsed.custom_id, status: parsed.response?.status_code, code: parsed.error?.code, bytes: raw.length };
      });
  }

  it('runs a chunk of answers far larger than the budget, holding at most the budget and one answer', async () => {
    sim.configure({ answerBytes: 2 * MB });
    const budget = new ResponseBudget(5 * MB);
    const batchId = await startBatch(ids(12));
    await runChunk(worker(simRouter(), { responses: budget, checkpoints: { intervalMs: 50, maxLines: 500, maxBytes: MB } }), sent[0]!);
    // 12 answers of 2 MB, 8 on the wire at once, in a budget of 5 MB: the budget plus the one answer read ahead.
    expect(budget.peakBytes).toBeLessThanOrEqual(5 * MB + 2 * MB + 64 * 1024);
    expect(budget.usedBytes).toBe(0);
    expect(await finalizeStep(deps, batchId)).toBe('completed');
    const done = (await deps.meta.getBatch(batchId))!;
    expect(done).toMatchObject({ total: 12, completed: 12, failed: 0 });
    const output = await linesOf(done.outputFileId);
    expect(output.map((l) => l.customId).sort()).toEqual(ids(12).sort());
    expect(Math.min(...output.map((l) => l.bytes))).toBeGreaterThan(2 * MB - 1_000);
    expect(sim.stats().requests).toBe(12);
  });

  it('puts an answer over MAX_RESPONSE_BYTES in the error file as response_too_large, and the rest as usual', async () => {
    sim.configure({ answerBytes: ({ key }) => (key === 'r3' ? 3 * MB : undefined) });
    const batchId = await startBatch(ids(6));
    await runChunk(worker(simRouter({ maxResponseBytes: MB }), { responses: new ResponseBudget(4 * MB) }), sent[0]!);
    expect(await finalizeStep(deps, batchId)).toBe('completed');
    const done = (await deps.meta.getBatch(batchId))!;
    expect(done).toMatchObject({ total: 6, completed: 5, failed: 1 });
    const errors = await linesOf(done.errorFileId);
    expect(errors).toMatchObject([{ customId: 'r3', status: undefined, code: 'response_too_large' }]);
    expect(errors[0]!.bytes).toBeLessThan(1_000);
    expect((await linesOf(done.outputFileId)).map((l) => l.customId).sort()).toEqual(ids(6).filter((id) => id !== 'r3'));
  });

  it('gives up a chunk that fails on every delivery: checkpointed answers kept, the rest chunk_failed, the batch ends failed', async () => {
    const batchId = await startBatch(ids(6), 3);
    // Chunk 1's result objects can never be stored; chunk 0 runs fine.
    const broken: BlobStore = Object.create(deps.blobs, {
      put: {
        value: (key: string, body: Parameters<BlobStore['put']>[1]) =>
          key.includes('/chunks/1.') ? Promise.reject(new RangeError('Invalid string length')) : deps.blobs.put(key, body),
      },
    });
    const healthy = worker(simRouter());
    await runChunk(healthy, sent[0]!);
    const failing = { ...worker(simRouter(), { checkpoints: { intervalMs: 0, maxLines: 1 } }), blobs: broken };
    await expect(runChunk(failing, sent[1]!)).rejects.toThrow(RangeError);
    expect(sim.stats().callsByCustomKey.get('r3')).toBe(1);

    await giveUpChunk(healthy, sent[1]!, new RangeError('Invalid string length'));
    const recorded = (await deps.meta.getBatch(batchId))!;
    expect(recorded).toMatchObject({ status: 'in_progress', doneChunks: [0, 1], completed: 6, failed: 0 });
    expect(recorded.errors).toMatchObject([{ code: 'chunk_failed', message: expect.stringContaining('chunk 1 (3 requests) failed') }]);
    expect(doneSignals).toEqual([batchId]);
    // A second give-up (a redelivery) changes nothing.
    await giveUpChunk(healthy, sent[1]!, new Error('again'));

    expect(await finalizeStep(deps, batchId)).toBe('failed');
    const done = (await deps.meta.getBatch(batchId))!;
    expect(done).toMatchObject({ total: 6, completed: 6, failed: 0, outputFileId: expect.any(String) });
    expect(done.failedAtMs).toEqual(expect.any(Number));
    // The run that failed had checkpointed its answers: they are kept, nothing is lost or doubled.
    expect((await linesOf(done.outputFileId)).map((l) => l.customId).sort()).toEqual(ids(6).sort());
    expect(done.errorFileId).toBeNull();
    expect(await deps.meta.getInputFile('p', done.inputFileId)).toBeDefined();
  });

  it('keeps what a failed run finished for the next delivery, even lines its checkpoints had not yet stored', async () => {
    const batchId = await startBatch(ids(3));
    let checkpointPuts = 0;
    // The chunk's result objects cannot be stored, and the first checkpoint write fails too.
    const broken: BlobStore = Object.create(deps.blobs, {
      put: {
        value: (key: string, body: Parameters<BlobStore['put']>[1]) => {
          if (key.includes('/chunks/0.')) return Promise.reject(new Error('SlowDown'));
          if (key.includes('/ckpt-') && checkpointPuts++ === 0) return Promise.reject(new Error('SlowDown'));
          return deps.blobs.put(key, body);
        },
      },
    });
    const failing = { ...worker(simRouter(), { checkpoints: { intervalMs: 60_000, maxLines: 500 } }), blobs: broken };
    await expect(runChunk(failing, sent[0]!)).rejects.toThrow('SlowDown');
    expect(sim.stats().requests).toBe(3);
    expect(await runChunk(worker(simRouter()), sent[0]!)).toBe('done');
    // Nothing was sent again.
    expect(sim.stats().requests).toBe(3);
    expect(await finalizeStep(deps, batchId)).toBe('completed');
    expect((await linesOf((await deps.meta.getBatch(batchId))!.outputFileId)).map((l) => l.customId).sort()).toEqual(ids(3));
  });

  it('names every unanswered line of a given-up chunk chunk_failed in the error file', async () => {
    const batchId = await startBatch(ids(4), 2);
    await runChunk(worker(simRouter()), sent[0]!);
    await giveUpChunk(worker(simRouter()), sent[1]!, new Error('boom'));
    expect(sim.stats().requests).toBe(2);
    expect(await finalizeStep(deps, batchId)).toBe('failed');
    const done = (await deps.meta.getBatch(batchId))!;
    expect(done).toMatchObject({ total: 4, completed: 2, failed: 2 });
    expect((await linesOf(done.outputFileId)).map((l) => l.customId).sort()).toEqual(['r0', 'r1']);
    expect((await linesOf(done.errorFileId)).map((l) => [l.customId, l.code])).toEqual([
      ['r2', 'chunk_failed'],
      ['r3', 'chunk_failed'],
    ]);
  });

  describe('a step that fails for good', () => {
    it('ends a validating batch failed with the reason, and lets go of its input', async () => {
      const file = fileRecord({ project: 'p', createdAtMs: Date.now(), expiresAtMs: null });
      await deps.meta.putFile(file);
      const batch = batchRecord({ project: 'p', inputFileId: file.id, status: 'validating', doneChunks: [], chunkAttempts: {} });
      await deps.meta.createBatch(batch);
      await deps.meta.pinFile('p', file.id, batch.id);
      expect(await deps.meta.deleteFile('p', file.id)).toMatchObject({ blobInUse: true });

      expect(await failBatchStep(deps, batch.id, { error: 'States.TaskFailed' })).toBe('failed');
      const failed = (await deps.meta.getBatch(batch.id))!;
      expect(failed.errors).toEqual([
        {
          code: 'validation_failed',
          message: 'The input file could not be validated: validation failed after its retries (States.TaskFailed).',
          param: null,
          line: null,
        },
      ]);
      expect(failed.failedAtMs).toEqual(expect.any(Number));
      // The pin is gone: the deleted input is purged.
      expect(await deps.meta.getInputFile('p', file.id)).toBeUndefined();
      expect(await failBatchStep(deps, batch.id, { error: 'again' })).toBe('failed');
    });

    it('finalizes a running batch as failed: recorded lines kept, every other line batch_failed', async () => {
      const batchId = await startBatch(ids(4), 2);
      await runChunk(worker(simRouter()), sent[0]!);
      expect(await failBatchStep(deps, batchId, { error: 'Lambda.Unknown' })).toBe('failed');
      const done = (await deps.meta.getBatch(batchId))!;
      expect(done).toMatchObject({ total: 4, completed: 2, failed: 2, unrun: 2 });
      expect(done.errors).toMatchObject([{ code: 'batch_failed', message: expect.stringContaining('(Lambda.Unknown)') }]);
      expect((await linesOf(done.outputFileId)).map((l) => l.customId).sort()).toEqual(['r0', 'r1']);
      expect((await linesOf(done.errorFileId)).map((l) => [l.customId, l.code])).toEqual([
        ['r2', 'batch_failed'],
        ['r3', 'batch_failed'],
      ]);
      // A chunk that reports after that is not counted.
      await runChunk(worker(simRouter()), sent[1]!);
      expect((await deps.meta.getBatch(batchId))!.completed).toBe(2);
    });

    it('ends a batch whose finalization failed for good failed, without files, with its input let go of and its scratch removed', async () => {
      const batchId = await startBatch(ids(2));
      await runChunk(worker(simRouter()), sent[0]!);
      await advance({ meta: deps.meta, clock: { now: () => Date.now() } }, batchId, 'finalizing');
      const batch = (await deps.meta.getBatch(batchId))!;
      await deps.meta.deleteFile('p', batch.inputFileId);

      expect(await failBatchStep(deps, batchId, { error: 'RangeError' })).toBe('failed');
      const failed = (await deps.meta.getBatch(batchId))!;
      expect(failed).toMatchObject({ status: 'failed', outputFileId: null, errorFileId: null });
      expect(failed.errors).toMatchObject([{ code: 'finalization_failed' }]);
      expect(await deps.meta.getInputFile('p', batch.inputFileId)).toBeUndefined();
      expect(await deps.blobs.list(`batches/${batchId}/`)).toEqual([]);
    });
  });

  describe('a run with a deadline (a Lambda invocation)', () => {
    const queue = () => ({ enqueue: async (messages: ChunkMessage[]) => void sent.push(...messages) });

    /** Every custom_id of the finished batch, from its output and error files. */
    async function finishedIds(batchId: string): Promise<string[]> {
      expect(await finalizeStep(deps, batchId)).toBe('completed');
      const done = (await deps.meta.getBatch(batchId))!;
      return [...(await linesOf(done.outputFileId)), ...(await linesOf(done.errorFileId))].map((l) => l.customId).sort();
    }

    it('stops starting requests a third of the time before the deadline, at most one upstream timeout, and keeps a reserve', () => {
      // A 15-minute invocation with a 10-minute upstream timeout: 15 s reserve, then 295 s to drain.
      expect(handBackTimes(0, 900_000, 600_000)).toEqual({ stopAtMs: 590_000, abortAtMs: 885_000 });
      // A short upstream timeout leaves more time to start requests.
      expect(handBackTimes(0, 900_000, 60_000)).toEqual({ stopAtMs: 825_000, abortAtMs: 885_000 });
      expect(handBackTimes(0, 1_000, 600_000)).toEqual({ stopAtMs: 600, abortAtMs: 900 });
    });

    it('finishes what it started before the deadline, hands the rest back, and the next delivery runs only the rest', async () => {
      sim.configure({ latencyMs: 250 });
      const batchId = await startBatch(ids(24));
      const first = sent[0]!;
      const startedAt = Date.now();
      // 4 in flight, 250 ms each: about 12 requests start before the run stops starting at ~0.9 s.
      const run = worker(simRouter({ concurrency: 4 }), { queue: queue(), upstreamTimeoutMs: 10_000 });
      expect(await runChunk(run, first, { deadlineMs: startedAt + 1_500 })).toBe('handed_back');
      expect(Date.now() - startedAt).toBeLessThan(1_500);
      // Handed back as the same chunk, and not recorded.
      expect(sent).toHaveLength(2);
      expect(sent[1]).toEqual(first);
      expect((await deps.meta.getBatch(batchId))!.doneChunks).toEqual([]);
      const afterFirst = sim.stats().requests;
      expect(afterFirst).toBeGreaterThan(0);
      expect(afterFirst).toBeLessThan(24);
      // Every request that started also finished: none was cut off, none is sent again.
      expect(sim.stats().byStatus['200']).toBe(afterFirst);

      sim.configure({ latencyMs: 0 });
      expect(await runChunk(worker(simRouter()), sent[1]!)).toBe('done');
      expect(sim.stats().requests).toBe(24);
      expect([...sim.stats().callsByCustomKey.values()].every((n) => n === 1)).toBe(true);
      expect(doneSignals).toEqual([batchId]);
      expect(await finishedIds(batchId)).toEqual(ids(24).sort());
    });

    it('aborts a request it can no longer wait for, and the next delivery sends it again', async () => {
      const batchId = await startBatch(ids(6));
      const hung = new Set(['r2']);
      let calls = 0;
      // r2 never answers while it is hung, until its signal aborts it.
      const upstream: Upstream = {
        async send(request, { mayStart, signal }) {
          if (!mayStart()) return undefined;
          calls += 1;
          const key = (request.body.messages as { content: string }[])[0]!.content;
          if (hung.has(key)) {
            await new Promise((resolve) => signal?.addEventListener('abort', resolve, { once: true }));
            return { kind: 'error', code: 'upstream_unreachable', message: 'aborted', unfinished: true };
          }
          return { kind: 'response', statusCode: 200, requestId: `req_${key}`, body: { id: key } };
        },
      };
      const startedAt = Date.now();
      const run = worker({ route: () => upstream }, { queue: queue(), upstreamTimeoutMs: 600_000 });
      expect(await runChunk(run, sent[0]!, { deadlineMs: startedAt + 1_000 })).toBe('handed_back');
      // Aborted at the reserve before the deadline (a tenth of the time left).
      expect(Date.now() - startedAt).toBeGreaterThanOrEqual(850);
      expect(Date.now() - startedAt).toBeLessThan(1_000);
      expect(calls).toBe(6);

      hung.clear();
      expect(await runChunk(worker({ route: () => upstream }), sent[1]!)).toBe('done');
      expect(calls).toBe(7);
      expect(await finishedIds(batchId)).toEqual(ids(6).sort());
    });

    it('hands back a request whose retry would come after the run stops starting, rather than call it expired', async () => {
      let failures = 0;
      sim.configure({
        failWhen: (_body, { key }) =>
          key === 'r1' && failures++ === 0
            ? { status: 503, body: { error: { message: 'busy' } }, headers: { 'retry-after': '5' } }
            : undefined,
      });
      const batchId = await startBatch(ids(3));
      const upstream = new HttpUpstream({
        baseUrl: sim.baseURL,
        apiKey: undefined,
        concurrency: 4,
        timeoutMs: 10_000,
        maxAttempts: 3,
        clock: systemClock,
      });
      const startedAt = Date.now();
      const run = worker({ route: () => upstream }, { queue: queue(), upstreamTimeoutMs: 10_000 });
      expect(await runChunk(run, sent[0]!, { deadlineMs: startedAt + 3_000 })).toBe('handed_back');
      // It did not wait out the 5 s Retry-After.
      expect(Date.now() - startedAt).toBeLessThan(2_000);
      expect(await runChunk(worker({ route: () => upstream }), sent[1]!)).toBe('done');
      expect(sim.stats().callsByCustomKey.get('r1')).toBe(2);
      const done = (await deps.meta.getBatch(batchId))!;
      expect(await finalizeStep(deps, batchId)).toBe('completed');
      expect((await deps.meta.getBatch(batchId))!).toMatchObject({ completed: 3, failed: 0 });
      expect(done.doneChunks).toEqual([0]);
    });

    it('counts a run that finished nothing in its time as a failed delivery, and hands nothing back', async () => {
      sim.configure({ hangRate: 1 });
      const batchId = await startBatch(ids(3));
      const run = worker(simRouter(), { queue: queue(), upstreamTimeoutMs: 10_000 });
      await expect(runChunk(run, sent[0]!, { deadlineMs: Date.now() + 600 })).rejects.toThrow(ChunkOutOfTime);
      expect(sent).toHaveLength(1);
      expect(sim.stats().byStatus.hang).toBe(3);
      sim.configure({ hangRate: 0 });
      expect(await runChunk(worker(simRouter()), sent[0]!)).toBe('done');
      expect(await finishedIds(batchId)).toEqual(ids(3).sort());
    });
  });
});
