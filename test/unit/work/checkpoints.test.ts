// Checkpoints: a chunk whose worker died resumes from what it had saved (nothing answered is sent
// again, every line lands once, counts exact), and finalization of a chunk that never reported
// keeps its saved lines and marks only the rest batch_expired or batch_cancelled.

import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DynamoMetaStore } from '../../../shared/adapters/aws/dynamo-meta-store.js';
import { type EmbeddedDynamo, startEmbeddedDynamo } from '../../../shared/adapters/local/embedded-dynamo.js';
import { FsBlobStore } from '../../../shared/adapters/local/fs-blob-store.js';
import { blobKeys } from '../../../shared/batch/keys.js';
import { enqueueStep, finalizeStep, type StepDeps, validateStep } from '../../../shared/batch/steps.js';
import { advance } from '../../../shared/batch/transitions.js';
import { silentLogger } from '../../../shared/log.js';
import type { BlobStore, ChunkMessage, Clock, Lifecycle } from '../../../shared/ports.js';
import type { Upstream, UpstreamResult } from '../../../shared/upstream/types.js';
import { CheckpointWriter, readCheckpoints } from '../../../shared/work/checkpoints.js';
import { runChunk } from '../../../shared/work/run-chunk.js';
import { batchRecord, fileRecord } from '../../adapters/meta-store-contract.js';

const IDS = ['a', 'bad-b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'];
const line = (id: string) =>
  JSON.stringify({
    custom_id: id,
    method: 'POST',
    url: '/v1/chat/completions',
    body: { model: 'm', messages: [{ role: 'user', content: id }] },
  });

const answer = (content: string): UpstreamResult =>
  content.startsWith('bad')
    ? { kind: 'response', statusCode: 400, requestId: 'r', body: { error: { message: 'no' } } }
    : { kind: 'response', statusCode: 200, requestId: 'r', body: { usage: { prompt_tokens: 2, completion_tokens: 3, total_tokens: 5 } } };

const contentOf = (body: Record<string, unknown>) => (body.messages as { content: string }[])[0]!.content;

/** An upstream that answers the first `answered` requests and holds the rest until `release()`. */
function stallingUpstream(answered: number) {
  const calls: string[] = [];
  const held: (() => void)[] = [];
  const upstream: Upstream = {
    async send(request, { mayStart }) {
      if (!mayStart()) return undefined;
      const content = contentOf(request.body);
      calls.push(content);
      if (calls.length <= answered) return answer(content);
      await new Promise<void>((resolve) => held.push(resolve));
      return undefined;
    },
  };
  return { upstream, calls, release: () => held.splice(0).forEach((resolve) => resolve()) };
}

function healthyUpstream() {
  const calls: string[] = [];
  const upstream: Upstream = {
    async send(request, { mayStart }) {
      if (!mayStart()) return undefined;
      calls.push(contentOf(request.body));
      return answer(contentOf(request.body));
    },
  };
  return { upstream, calls };
}

async function until(condition: () => Promise<boolean>, timeoutMs = 5_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('checkpoints', () => {
  let dynamo: EmbeddedDynamo;
  let dir: string;
  let deps: StepDeps;
  let sent: ChunkMessage[];
  let now: number;
  const clock: Clock = { now: () => now, sleep: async () => {} };
  const lifecycle: Lifecycle = {
    start: async () => {},
    state: async () => 'running',
    cancelled: async () => {},
    allChunksDone: async () => {},
  };
  const worker = (upstream: Upstream) => ({
    meta: deps.meta,
    blobs: deps.blobs,
    lifecycle,
    upstreams: { route: () => upstream },
    clock,
    log: silentLogger,
    checkpoints: { intervalMs: 0, maxLines: 1 },
  });

  beforeAll(async () => {
    dynamo = await startEmbeddedDynamo({});
  });
  afterAll(async () => {
    await dynamo.close();
  });
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ckpt-'));
    sent = [];
    now = 1_000_000;
    deps = {
      meta: new DynamoMetaStore({ client: dynamo.client, tableName: dynamo.tableName, now: () => now }),
      blobs: new FsBlobStore(dir),
      queue: { enqueue: async (messages) => void sent.push(...messages) },
      upstreams: { route: () => healthyUpstream().upstream },
      clock,
      log: silentLogger,
      limits: { maxRequestsPerBatch: 1_000, maxLineBytes: 10_000 },
      chunking: { maxRequests: 100, maxBytes: 1_000_000 },
    };
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function startBatch(): Promise<string> {
    const file = fileRecord({ project: 'p', createdAtMs: now, expiresAtMs: null });
    file.blobKey = blobKeys.file(file.id);
    await deps.blobs.put(file.blobKey, `${IDS.map(line).join('\n')}\n`);
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
    });
    await deps.meta.createBatch(batch);
    expect(await validateStep(deps, batch.id)).toBe('in_progress');
    expect(await enqueueStep(deps, batch.id)).toBe(1);
    return batch.id;
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

  const checkpointKeys = async (blobs: BlobStore, batchId: string) =>
    (await blobs.list(`batches/${batchId}/`)).filter((key) => key.includes('/ckpt-'));

  /** Runs the chunk until `answered` lines are checkpointed, then leaves it hanging: the worker "died". */
  async function crashAfter(batchId: string, answered: number) {
    const stalled = stallingUpstream(answered);
    const run = runChunk(worker(stalled.upstream), sent[0]!);
    await until(async () => (await readCheckpoints(deps.blobs, batchId, 0)).lines.size === answered);
    return { ...stalled, run };
  }

  it('resumes a redelivered chunk where it stopped: nothing answered is sent again, every line once, counts exact', async () => {
    const batchId = await startBatch();
    const crashed = await crashAfter(batchId, 6);
    expect(crashed.calls.slice(0, 6)).toEqual(IDS.slice(0, 6));

    const healthy = healthyUpstream();
    await runChunk(worker(healthy.upstream), sent[0]!);
    // Only the four that were never answered (in flight at the "crash") went again.
    expect(healthy.calls.sort()).toEqual(IDS.slice(6));
    const recorded = (await deps.meta.getBatch(batchId))!;
    expect(recorded).toMatchObject({ completed: 9, failed: 1, unrun: 0, doneChunks: [0] });
    expect(recorded.usage.totalTokens).toBe(45);
    expect(await checkpointKeys(deps.blobs, batchId)).toEqual([]);

    // The dead run wakes up late: its result is not counted and leaves nothing behind.
    crashed.release();
    await crashed.run;
    expect((await deps.meta.getBatch(batchId))!.completed).toBe(9);

    expect(await finalizeStep(deps, batchId)).toBe('completed');
    const done = (await deps.meta.getBatch(batchId))!;
    expect(done).toMatchObject({ total: 10, completed: 9, failed: 1 });
    const output = await readLines(done.outputFileId);
    const errors = await readLines(done.errorFileId);
    expect(output.map((l) => l.custom_id).sort()).toEqual(IDS.filter((id) => id !== 'bad-b'));
    expect(errors).toMatchObject([{ custom_id: 'bad-b', response: { status_code: 400 } }]);
    expect((await deps.blobs.list(`batches/${batchId}/`)).filter((key) => !key.endsWith('plan.json'))).toEqual([]);
  });

  it.each([
    ['expired', 'batch_expired'],
    ['cancelled', 'batch_cancelled'],
  ] as const)('finalizes a chunk whose worker died (%s): saved lines kept as they were, only the rest marked %s', async (status, code) => {
    const batchId = await startBatch();
    const crashed = await crashAfter(batchId, 5);
    if (status === 'cancelled') await advance({ meta: deps.meta, clock: { now: () => now } }, batchId, 'cancelling');
    else now += 120_000;

    expect(await finalizeStep(deps, batchId)).toBe(status);
    const done = (await deps.meta.getBatch(batchId))!;
    expect(done).toMatchObject({ total: 10, completed: 4, failed: 6, unrun: 5 });
    expect(done.usage.totalTokens).toBe(20);
    const output = await readLines(done.outputFileId);
    const errors = await readLines(done.errorFileId);
    expect(output.map((l) => l.custom_id)).toEqual(['a', 'c', 'd', 'e']);
    expect(errors.map((l) => [l.custom_id, l.error?.code ?? l.response.status_code])).toEqual([
      ['bad-b', 400],
      ...IDS.slice(5).map((id) => [id, code]),
    ]);
    expect(await checkpointKeys(deps.blobs, batchId)).toEqual([]);
    // A second finalization changes nothing, and the late worker counts nothing.
    expect(await finalizeStep(deps, batchId)).toBe(status);
    crashed.release();
    await crashed.run;
    expect((await deps.meta.getBatch(batchId))!).toMatchObject({ completed: 4, failed: 6 });
  });

  it('writes in small steps: at most one write at a time, the next once enough lines wait; a failed write keeps its lines', async () => {
    const puts: string[][] = [];
    let failNext = true;
    let release: (() => void) | undefined;
    const blobs = {
      put: async (_key: string, body: Uint8Array | AsyncIterable<Uint8Array>) => {
        // A small checkpoint comes whole; a large one as a stream, never joined: read them as the store would.
        let text = '';
        if (body instanceof Uint8Array) text = Buffer.from(body).toString('utf8');
        else for await (const piece of body) text += Buffer.from(piece).toString('utf8');
        puts.push(text.split('\n').filter(Boolean));
        await new Promise<void>((resolve) => (release = resolve));
        if (failNext) {
          failNext = false;
          throw new Error('disk full');
        }
        return { bytes: text.length };
      },
    } as unknown as BlobStore;
    const settle = () => new Promise((resolve) => setImmediate(resolve));
    let t = 0;
    const writer = new CheckpointWriter({ blobs, clock: { now: () => t, sleep: async () => {} }, log: silentLogger }, 'b', 0, 'x', {
      intervalMs: 60_000,
      maxLines: 2,
      maxWrites: 1,
    });
    void writer.add('1\n');
    await settle();
    expect(puts).toHaveLength(0);
    const second = writer.add('2\n');
    await settle();
    expect(puts).toEqual([['1', '2']]);
    void writer.add('3\n');
    void writer.add('4\n');
    await settle();
    expect(puts).toHaveLength(1); // one write at a time
    release!(); // the first write fails: its lines wait for the next, which waits a second
    await settle();
    expect(puts).toHaveLength(1);
    t += 1_000;
    void writer.add('5\n');
    await settle();
    expect(puts.at(-1)).toEqual(['1', '2', '3', '4', '5']);
    release!();
    await second; // a line is let go of once a checkpoint holding it is stored
    await writer.close();
    expect(writer.keys).toEqual(['batches/b/chunks/0/ckpt-x-000001.jsonl']);
  });

  it('writes once half as many lines wait as the chunk has requests in flight, whatever the interval', async () => {
    const puts: string[][] = [];
    const blobs = {
      put: async (_key: string, body: Uint8Array) => {
        puts.push(Buffer.from(body).toString('utf8').split('\n').filter(Boolean));
        return { bytes: body.length };
      },
    } as unknown as BlobStore;
    const settle = () => new Promise((resolve) => setImmediate(resolve));
    let inFlight = 8;
    const writer = new CheckpointWriter({ blobs, clock: { now: () => 0, sleep: async () => {} }, log: silentLogger }, 'b', 0, 'x', {
      intervalMs: 60_000,
      maxLines: 500,
      inFlight: () => inFlight,
    });
    for (const n of [1, 2, 3]) void writer.add(`${n}\n`);
    await settle();
    expect(puts).toEqual([]);
    void writer.add('4\n');
    await settle();
    expect(puts).toEqual([['1', '2', '3', '4']]);
    // The chunk's last requests: one in flight, so every line is saved as it comes.
    inFlight = 1;
    void writer.add('5\n');
    await settle();
    expect(puts.at(-1)).toEqual(['5']);
    await writer.close();
    expect(writer.keys).toHaveLength(2);
  });
});
