// The results pager over the filesystem BlobStore: chunks recorded in any order are each read
// once, a page stops where its limit falls and the next goes on from there, and an ended batch
// is read from its files.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsBlobStore } from '../../../shared/adapters/local/fs-blob-store.js';
import { blobKeys } from '../../../shared/batch/keys.js';
import type { BatchRecord, FileRecord } from '../../../shared/batch/model.js';
import { BadResultsCursor, findResult, ResultsMoved, resultsPage } from '../../../shared/batch/results-so-far.js';
import type { MetaStore } from '../../../shared/ports.js';
import { batchRecord } from '../../adapters/meta-store-contract.js';

const line = (id: string, status = 200) =>
  `${JSON.stringify({ id: `r-${id}`, custom_id: id, response: { status_code: status }, error: null })}\n`;
const ids = (lines: unknown[]) => lines.map((l) => (l as { custom_id: string }).custom_id);

describe('results so far', () => {
  let root: string;
  let blobs: FsBlobStore;
  const files = new Map<string, FileRecord>();
  let current: BatchRecord;
  const meta = {
    getFile: async (_project: string, id: string) => files.get(id),
    getBatch: async () => current,
  } as unknown as MetaStore;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'results-so-far-'));
    blobs = new FsBlobStore(root);
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  async function record(batch: BatchRecord, chunk: number, output: string[], errors: string[]) {
    await blobs.put(blobKeys.chunkOutput(batch.id, chunk, 'a1'), output.map((id) => line(id)).join(''));
    await blobs.put(blobKeys.chunkErrors(batch.id, chunk, 'a1'), errors.map((id) => line(id, 500)).join(''));
    batch.doneChunks = [...batch.doneChunks, chunk].sort((a, b) => a - b);
    batch.chunkAttempts = { ...batch.chunkAttempts, [String(chunk)]: 'a1' };
  }

  it('reads every recorded chunk once, also one recorded behind the cursor', async () => {
    const batch = batchRecord({ status: 'in_progress', inProgressAtMs: Date.now(), chunkCount: 3 });
    current = batch;
    const deps = { meta, blobs };
    await record(batch, 1, ['c1-a', 'c1-b'], ['c1-x']);

    const first = await resultsPage(deps, batch, undefined, 2);
    expect(ids(first.lines)).toEqual(['c1-a', 'c1-b']);
    expect(first.hasMore).toBe(true);
    const second = await resultsPage(deps, batch, first.next, 2);
    expect(ids(second.lines)).toEqual(['c1-x']);
    expect(second.hasMore).toBe(false);
    expect(second.next).toEqual({ phase: 'c', done: [1] });

    // Chunk 0 is recorded after chunk 1 was read whole, chunk 2 after it.
    await record(batch, 0, ['c0-a'], []);
    await record(batch, 2, ['c2-a', 'c2-b'], ['c2-x']);
    const third = await resultsPage(deps, batch, second.next, 10);
    expect(ids(third.lines)).toEqual(['c0-a', 'c2-a', 'c2-b', 'c2-x']);
    expect(third.next).toEqual({ phase: 'c', done: [0, 1, 2] });
    expect(await resultsPage(deps, batch, third.next, 10)).toMatchObject({ lines: [], hasMore: false });

    expect(await findResult(deps, batch, 'c2-x')).toMatchObject({ custom_id: 'c2-x', response: { status_code: 500 } });
    expect(await findResult(deps, batch, 'c2')).toBeUndefined();
  });

  it('reads an ended batch from its output then its error file; a running cursor then has moved', async () => {
    const batch = batchRecord({ status: 'completed', inProgressAtMs: Date.now(), outputFileId: 'file-out', errorFileId: 'file-err' });
    current = batch;
    for (const [id, body] of [
      ['file-out', line('o1') + line('o2') + line('o3')],
      ['file-err', line('e1', 429)],
    ] as const) {
      await blobs.put(blobKeys.file(id), body);
      files.set(id, { id, blobKey: blobKeys.file(id) } as FileRecord);
    }
    const deps = { meta, blobs };
    const first = await resultsPage(deps, batch, undefined, 2);
    expect(ids(first.lines)).toEqual(['o1', 'o2']);
    const second = await resultsPage(deps, batch, first.next, 2);
    expect(ids(second.lines)).toEqual(['o3', 'e1']);
    expect(second.hasMore).toBe(false);
    await expect(resultsPage(deps, batch, { phase: 'c', done: [0] }, 2)).rejects.toBeInstanceOf(ResultsMoved);
    // A cursor that was never given (an offset inside a line) is refused, not a server error.
    await expect(resultsPage(deps, batch, { phase: 'f', kind: 'o', offset: 5 }, 2)).rejects.toBeInstanceOf(BadResultsCursor);
    expect(await findResult(deps, batch, 'e1')).toMatchObject({ custom_id: 'e1' });
  });
});
