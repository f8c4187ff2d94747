// The lifecycle steps and the chunk worker over the embedded adapters: transitions, chunk
// planning into messages, once-only recording of redelivered chunks, and finalization that
// accounts for every line.

import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { DynamoMetaStore } from '../../../shared/adapters/aws/dynamo-meta-store.js';
import { type EmbeddedDynamo, startEmbeddedDynamo } from '../../../shared/adapters/local/embedded-dynamo.js';
import { FsBlobStore } from '../../../shared/adapters/local/fs-blob-store.js';
import { blobKeys } from '../../../shared/batch/keys.js';
import type { BatchRecord } from '../../../shared/batch/model.js';
import { derivedFileId, enqueueStep, finalizeStep, type StepDeps, validateStep } from '../../../shared/batch/steps.js';
import { advance } from '../../../shared/batch/transitions.js';
import { RECORD_ERRORS_BYTES } from '../../../shared/input/validation-errors.js';
import { silentLogger } from '../../../shared/log.js';
import type { ChunkMessage, Clock, Lifecycle } from '../../../shared/ports.js';
import type { Upstream, UpstreamRouter } from '../../../shared/upstream/types.js';
import { runChunk } from '../../../shared/work/run-chunk.js';
import { batchRecord, fileRecord } from '../../adapters/meta-store-contract.js';

const line = (id: string, model = 'm') =>
  JSON.stringify({
    custom_id: id,
    method: 'POST',
    url: '/v1/chat/completions',
    body: { model, messages: [{ role: 'user', content: id }] },
  });

describe('batch steps and the chunk worker', () => {
  let dynamo: EmbeddedDynamo;
  let dir: string;
  let deps: StepDeps;
  let sent: ChunkMessage[];
  let upstreamCalls: string[];
  let now: number;
  let doneSignals: string[];

  const clock: Clock = { now: () => now, sleep: async () => {} };
  const upstream: Upstream = {
    async send(request, { mayStart }) {
      if (!mayStart()) return undefined;
      const content = (request.body.messages as { content: string }[])[0]!.content;
      upstreamCalls.push(content);
      if (content.startsWith('bad')) return { kind: 'response', statusCode: 400, requestId: 'r', body: { error: { message: 'no' } } };
      return {
        kind: 'response',
        statusCode: 200,
        requestId: 'r',
        body: { usage: { prompt_tokens: 2, completion_tokens: 3, total_tokens: 5 } },
      };
    },
  };
  const router: UpstreamRouter = { route: (model) => (model === 'm' ? upstream : undefined) };
  const lifecycle: Lifecycle = {
    start: async () => {},
    state: async () => 'running',
    cancelled: async () => {},
    allChunksDone: async (id) => void doneSignals.push(id),
  };
  const worker = () => ({ meta: deps.meta, blobs: deps.blobs, lifecycle, upstreams: router, clock, log: silentLogger });

  beforeAll(async () => {
    dynamo = await startEmbeddedDynamo({});
  });
  afterAll(async () => {
    await dynamo.close();
  });
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'steps-'));
    sent = [];
    upstreamCalls = [];
    doneSignals = [];
    now = 1_000_000;
    deps = {
      meta: new DynamoMetaStore({ client: dynamo.client, tableName: dynamo.tableName, now: () => now }),
      blobs: new FsBlobStore(dir),
      queue: { enqueue: async (messages) => void sent.push(...messages) },
      upstreams: router,
      clock,
      log: silentLogger,
      limits: { maxRequestsPerBatch: 1_000, maxLineBytes: 10_000 },
      chunking: { maxRequests: 3, maxBytes: 1_000_000 },
    };
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function createBatch(lines: string[], overrides: Partial<BatchRecord> = {}): Promise<BatchRecord> {
    const file = fileRecord({ project: 'p', createdAtMs: now, expiresAtMs: null });
    file.blobKey = blobKeys.file(file.id);
    await deps.blobs.put(file.blobKey, `${lines.join('\n')}\n`);
    await deps.meta.putFile(file);
    const batch = batchRecord({
      project: 'p',
      inputFileId: file.id,
      status: 'validating',
      createdAtMs: now,
      expiresAtMs: now + 60_000,
      total: 0,
      completed: 0,
      failed: 0,
      unrun: 0,
      chunkCount: 0,
      doneChunks: [],
      chunkAttempts: {},
      ...overrides,
    });
    await deps.meta.createBatch(batch);
    return batch;
  }

  async function readLines(fileId: string | null) {
    if (!fileId) return [];
    const file = await deps.meta.getFile('p', fileId);
    let text = '';
    for await (const piece of await deps.blobs.get(file!.blobKey)) text += Buffer.from(piece).toString('utf8');
    return text
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
  }

  it('validates a good file into in_progress and plans chunks by count', async () => {
    const batch = await createBatch(['a', 'b', 'c', 'd', 'e', 'f', 'g'].map((id) => line(id)));
    expect(await validateStep(deps, batch.id)).toBe('in_progress');
    const started = (await deps.meta.getBatch(batch.id))!;
    expect(started).toMatchObject({ status: 'in_progress', model: 'm', total: 7, chunkCount: 3, inProgressAtMs: now });
    expect(await enqueueStep(deps, batch.id)).toBe(3);
    expect(sent.map((m) => m.chunk.requests)).toEqual([3, 3, 1]);
  });

  it('fails a file with bad lines, and one whose model has no upstream', async () => {
    const bad = await createBatch([line('a'), '{nope', line('a')]);
    expect(await validateStep(deps, bad.id)).toBe('failed');
    expect((await deps.meta.getBatch(bad.id))!.errors!.map((e) => [e.line, e.code])).toEqual([
      [2, 'invalid_json_line'],
      [3, 'duplicate_custom_id'],
    ]);
    const unrouted = await createBatch([line('a', 'nobody-serves-this')]);
    expect(await validateStep(deps, unrouted.id)).toBe('failed');
    expect((await deps.meta.getBatch(unrouted.id))!.errors![0]).toMatchObject({ code: 'model_not_found', param: 'body.model' });
  });

  /** A file of 1,001 lines whose last 1,000 each name another long CJK model than the first. */
  const cjkMismatches = () => [
    line('first', '通义千问超大规模语言模型'.repeat(12)),
    ...Array.from({ length: 1_000 }, (_, i) => line(`r${i}`, `深度求索推理模型第${i}版`.repeat(10))),
  ];

  it('fails a file whose errors outgrow the batch record: the record keeps what fits and a notice, the error file all of them', async () => {
    deps.limits = { ...deps.limits, maxRequestsPerBatch: 10_000 };
    const batch = await createBatch(cjkMismatches());
    expect(await validateStep(deps, batch.id)).toBe('failed');
    const failed = (await deps.meta.getBatch(batch.id))!;
    const errors = failed.errors!;
    const listed = errors.slice(0, -1);
    expect(listed.length).toBeGreaterThan(50);
    expect(listed.map((e) => [e.line, e.code])).toEqual(listed.map((_, i) => [i + 2, 'model_mismatch']));
    expect(errors.at(-1)).toEqual({
      code: 'too_many_errors',
      message: `The file has 1,000 errors: the first ${listed.length} are listed here; all 1,000 are in the error file ${failed.errorFileId} (error_file_id).`,
      param: null,
      line: null,
    });
    // What DynamoDB would be asked to store stays far below its 400 KB item limit.
    expect(Buffer.byteLength(JSON.stringify(listed))).toBeLessThanOrEqual(RECORD_ERRORS_BYTES);
    expect(Buffer.byteLength(JSON.stringify(failed))).toBeLessThan(40 * 1024);

    const filed = await readLines(failed.errorFileId);
    expect(filed.map((e) => e.line)).toEqual(Array.from({ length: 1_000 }, (_, i) => i + 2));
    expect(filed.slice(0, listed.length)).toEqual(listed);
    expect(await deps.meta.getFile('p', failed.errorFileId!)).toMatchObject({
      purpose: 'batch_output',
      filename: `${batch.id}_error.jsonl`,
    });
    expect(await validateStep(deps, batch.id)).toBe('failed');
    expect((await deps.meta.getBatch(batch.id))!).toEqual(failed);
  });

  it('keeps no error file for a batch cancelled while validation wrote it', async () => {
    deps.limits = { ...deps.limits, maxRequestsPerBatch: 10_000 };
    const batch = await createBatch(cjkMismatches());
    const meta = deps.meta;
    const putFile = meta.putFile.bind(meta);
    vi.spyOn(meta, 'putFile').mockImplementationOnce(async (file) => {
      await putFile(file);
      await advance({ meta, clock: { now: () => now } }, batch.id, 'cancelling');
    });
    // The cancel moves it on (in AWS the Choice after Validate finalizes a cancelling batch).
    expect(await validateStep(deps, batch.id)).toBe('cancelling');
    expect(await meta.getBatch(batch.id)).toMatchObject({ status: 'cancelling', errors: null, errorFileId: null });
    const errorFileId = derivedFileId(batch.id, 'error');
    expect(await meta.getFile('p', errorFileId)).toBeUndefined();
    expect(await deps.blobs.size(blobKeys.file(errorFileId))).toBeUndefined();
  });

  it('counts a redelivered chunk once and runs nothing for it again', async () => {
    const batch = await createBatch(['a', 'bad-b', 'c', 'd'].map((id) => line(id)));
    await validateStep(deps, batch.id);
    await enqueueStep(deps, batch.id);
    await runChunk(worker(), sent[0]!);
    await runChunk(worker(), sent[0]!);
    expect(upstreamCalls).toEqual(['a', 'bad-b', 'c']);
    const after = (await deps.meta.getBatch(batch.id))!;
    expect(after).toMatchObject({ completed: 2, failed: 1, doneChunks: [0] });
    expect(after.usage.totalTokens).toBe(10);

    // Two deliveries of the same chunk at once: both run, only one is recorded, the other's objects are removed.
    await Promise.all([runChunk(worker(), sent[1]!), runChunk(worker(), sent[1]!)]);
    const final = (await deps.meta.getBatch(batch.id))!;
    expect(final).toMatchObject({ completed: 3, failed: 1, doneChunks: [0, 1] });
    expect(doneSignals).toEqual([batch.id]);
    expect(await finalizeStep(deps, batch.id)).toBe('completed');
    const done = (await deps.meta.getBatch(batch.id))!;
    const output = await readLines(done.outputFileId);
    const errors = await readLines(done.errorFileId);
    expect(output.map((l) => l.custom_id).sort()).toEqual(['a', 'c', 'd']);
    expect(errors.map((l) => l.custom_id)).toEqual(['bad-b']);
    expect(errors[0]).toMatchObject({ response: { status_code: 400 }, error: null });
  });

  describe('an input file deleted while its batch runs', () => {
    /** A batch as the API creates it (pinning its file), whose file the user then deletes. */
    async function batchWithDeletedInput(lines: string[]) {
      const batch = await createBatch(lines);
      const file = (await deps.meta.pinFile('p', batch.inputFileId, batch.id))!;
      expect(await deps.meta.deleteFile('p', file.id)).toMatchObject({ blobInUse: true });
      return { batch, file };
    }
    const blobExists = async (key: string) => (await deps.blobs.size(key)) !== undefined;

    it('is still read by validation and the chunks, and goes when the batch completes', async () => {
      const { batch, file } = await batchWithDeletedInput(['a', 'b', 'c', 'd'].map((id) => line(id)));
      expect(await validateStep(deps, batch.id)).toBe('in_progress');
      await enqueueStep(deps, batch.id);
      for (const message of sent) await runChunk(worker(), message);
      expect(await blobExists(file.blobKey)).toBe(true);
      expect(await finalizeStep(deps, batch.id)).toBe('completed');
      expect((await deps.meta.getBatch(batch.id))!).toMatchObject({ completed: 4, failed: 0 });
      expect(await blobExists(file.blobKey)).toBe(false);
      expect(await deps.meta.getInputFile('p', file.id)).toBeUndefined();
      // A finalize that runs again on the final batch lets go again, harmlessly.
      expect(await finalizeStep(deps, batch.id)).toBe('completed');
    });

    it('goes when validation fails the batch', async () => {
      const { batch, file } = await batchWithDeletedInput([line('a'), '{nope']);
      expect(await validateStep(deps, batch.id)).toBe('failed');
      expect(await blobExists(file.blobKey)).toBe(false);
      expect(await deps.meta.getInputFile('p', file.id)).toBeUndefined();
      expect(await validateStep(deps, batch.id)).toBe('failed');
    });

    it('goes only when the last of its batches ends: one cancelled while validating, one completed', async () => {
      const cancelled = await createBatch(['a', 'b'].map((id) => line(id)));
      const completed = await createBatch([], { inputFileId: cancelled.inputFileId });
      const file = (await deps.meta.pinFile('p', cancelled.inputFileId, cancelled.id))!;
      await deps.meta.pinFile('p', file.id, completed.id);
      expect(await deps.meta.deleteFile('p', file.id)).toMatchObject({ blobInUse: true });

      await advance({ meta: deps.meta, clock: { now: () => now } }, cancelled.id, 'cancelling');
      expect(await validateStep(deps, cancelled.id)).toBe('cancelling');
      expect(await finalizeStep(deps, cancelled.id)).toBe('cancelled');
      expect(await blobExists(file.blobKey)).toBe(true);

      expect(await validateStep(deps, completed.id)).toBe('in_progress');
      await enqueueStep(deps, completed.id);
      for (const message of sent) await runChunk(worker(), message);
      expect(await finalizeStep(deps, completed.id)).toBe('completed');
      expect(await blobExists(file.blobKey)).toBe(false);
    });
  });

  it('on cancel, finalizes recorded chunks as they are and every other line as batch_cancelled', async () => {
    const batch = await createBatch(['a', 'b', 'c', 'd', 'e', 'f', 'g'].map((id) => line(id)));
    await validateStep(deps, batch.id);
    await enqueueStep(deps, batch.id);
    await runChunk(worker(), sent[0]!);
    await advance({ meta: deps.meta, clock: { now: () => now } }, batch.id, 'cancelling');
    // A chunk delivered after the cancel runs nothing.
    await runChunk(worker(), sent[1]!);
    expect(upstreamCalls).toEqual(['a', 'b', 'c']);

    expect(await finalizeStep(deps, batch.id)).toBe('cancelled');
    const done = (await deps.meta.getBatch(batch.id))!;
    expect(done).toMatchObject({ total: 7, completed: 3, failed: 4, unrun: 4 });
    expect(done.cancelledAtMs).toBe(now);
    const output = await readLines(done.outputFileId);
    const errors = await readLines(done.errorFileId);
    expect(output.map((l) => l.custom_id)).toEqual(['a', 'b', 'c']);
    expect(errors.map((l) => [l.custom_id, l.error.code])).toEqual([
      ['d', 'batch_cancelled'],
      ['e', 'batch_cancelled'],
      ['f', 'batch_cancelled'],
      ['g', 'batch_cancelled'],
    ]);
    // A chunk that reports after finalization is not counted.
    await runChunk(worker(), sent[2]!);
    expect((await deps.meta.getBatch(batch.id))!.completed).toBe(3);
  });

  it('ends expired when the window passed with lines unrun, and a second finalize changes nothing', async () => {
    const batch = await createBatch(['a', 'b', 'c', 'd'].map((id) => line(id)));
    await validateStep(deps, batch.id);
    await enqueueStep(deps, batch.id);
    await runChunk(worker(), sent[0]!);
    now += 120_000;
    await runChunk(worker(), sent[1]!);
    expect(upstreamCalls).toEqual(['a', 'b', 'c']);
    expect(await finalizeStep(deps, batch.id)).toBe('expired');
    const done = (await deps.meta.getBatch(batch.id))!;
    expect(done).toMatchObject({ completed: 3, failed: 1, expiredAtMs: now });
    const errors = await readLines(done.errorFileId);
    expect(errors).toMatchObject([{ custom_id: 'd', response: null, error: { code: 'batch_expired' } }]);
    expect(await finalizeStep(deps, batch.id)).toBe('expired');
  });

  it('finishes a finalization that stopped half-way (crash after entering finalizing)', async () => {
    const batch = await createBatch(['a', 'b'].map((id) => line(id)));
    await validateStep(deps, batch.id);
    await enqueueStep(deps, batch.id);
    await runChunk(worker(), sent[0]!);
    await advance({ meta: deps.meta, clock: { now: () => now } }, batch.id, 'finalizing');
    expect(await finalizeStep(deps, batch.id)).toBe('completed');
    expect((await readLines((await deps.meta.getBatch(batch.id))!.outputFileId)).length).toBe(2);
  });
});
