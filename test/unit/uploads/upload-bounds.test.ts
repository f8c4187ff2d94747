// Upload parts are bounded: the parts of an upload add up to at most the bytes it announced (and
// never past MAX_FILE_BYTES), also when they race; a refused part stores nothing and leaves the
// upload as it was. The sweep deletes the parts of uploads that expired untouched, were cancelled
// or completed, and parts no record names, but never a part a request may still be recording.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsBlobStore } from '../../../shared/adapters/local/fs-blob-store.js';
import { createApiApp } from '../../../shared/api/app.js';
import type { Clock } from '../../../shared/ports.js';
import { MAX_PART_BYTES } from '../../../shared/uploads/model.js';
import { uploadSweeper } from '../../../shared/uploads/sweep.js';
import { postTo } from '../../support/api-request.js';
import { MemoryMetaStore } from '../../support/memory-stores.js';

const HOUR = 3_600_000;

describe('upload bounds and the sweep', () => {
  let dir: string;
  let blobs: FsBlobStore;
  let meta: MemoryMetaStore;
  let now = Date.UTC(2026, 11, 1);
  const clock: Clock = { now: () => now, sleep: async () => undefined };
  const logged: string[] = [];
  const appWith = (maxFileBytes: number) =>
    createApiApp({
      meta: meta.asMetaStore(),
      blobs,
      lifecycle: {
        start: async () => undefined,
        allChunksDone: async () => undefined,
        cancelled: async () => undefined,
        state: async () => 'running',
      },
      clock,
      log: { log: () => undefined },
      apiKeys: undefined,
      limits: { maxFileBytes, minCompletionWindowMs: HOUR, maxCompletionWindowMs: 24 * HOUR },
    });
  let app: ReturnType<typeof createApiApp>;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'upload-bounds-'));
    blobs = new FsBlobStore(dir);
    meta = new MemoryMetaStore(() => now);
    app = appWith(1_000_000);
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const post = (url: string, body?: unknown, on = app) => postTo(on, url, body);
  const part = (bytes: number) => {
    const form = new FormData();
    form.set('data', new Blob([new Uint8Array(bytes).fill(0x20)]), 'part');
    return form;
  };
  const createUpload = async (bytes: number, on = app) =>
    (await post('/v1/uploads', { filename: 'u.jsonl', purpose: 'batch', bytes, mime_type: 'application/jsonl' }, on)).body.id as string;
  const partsOf = (id: string) => blobs.list(`uploads/${id}/`);

  it('refuses a part that would take the parts past the announced bytes, and keeps nothing of it', async () => {
    const id = await createUpload(100);
    expect((await post(`/v1/uploads/${id}/parts`, part(60))).status).toBe(200);
    const stored = await partsOf(id);

    const over = await post(`/v1/uploads/${id}/parts`, part(41));
    expect(over.status).toBe(400);
    expect(over.body.error).toMatchObject({ code: 'upload_size_exceeded', param: 'data', type: 'invalid_request_error' });
    expect(await partsOf(id)).toEqual(stored);
    expect((await meta.getUpload('default', id))?.partBytes).toBe(60);

    // One part larger than the whole upload is cut off while it streams.
    const huge = await post(`/v1/uploads/${id}/parts`, part(5_000_000));
    expect(huge.body.error.code).toBe('upload_size_exceeded');
    expect(await partsOf(id)).toEqual(stored);

    expect((await post(`/v1/uploads/${id}/parts`, part(40))).status).toBe(200);
    // Full: the next part is refused before a byte of it is read.
    expect((await post(`/v1/uploads/${id}/parts`, part(1))).body.error.code).toBe('upload_size_exceeded');
    expect(await partsOf(id)).toHaveLength(2);
  });

  it('lets exactly the parts that fit through when they race', async () => {
    const id = await createUpload(100);
    const answers = await Promise.all(Array.from({ length: 8 }, () => post(`/v1/uploads/${id}/parts`, part(30))));
    expect(answers.filter((a) => a.status === 200)).toHaveLength(3);
    expect(answers.filter((a) => a.body.error?.code === 'upload_size_exceeded')).toHaveLength(5);
    expect(await partsOf(id)).toHaveLength(3);
    expect((await meta.getUpload('default', id))?.partBytes).toBe(90);
  });

  it('refuses parts past MAX_FILE_BYTES, even for an upload announced under a larger limit', async () => {
    const id = await createUpload(10_000, appWith(10_000));
    const lowered = appWith(5_000);
    expect((await post(`/v1/uploads/${id}/parts`, part(4_000), lowered)).status).toBe(200);
    const over = await post(`/v1/uploads/${id}/parts`, part(1_001), lowered);
    expect(over.status).toBe(400);
    expect(over.body.error.code).toBe('upload_size_exceeded');
    expect(over.body.error.message).toContain('MAX_FILE_BYTES');
    expect(await partsOf(id)).toHaveLength(1);
  });

  it('still answers 413 for a part over 64 MB when the upload has room for it', async () => {
    const id = await createUpload(MAX_PART_BYTES + 10, appWith(200 * 1024 * 1024));
    const big = await post(`/v1/uploads/${id}/parts`, part(MAX_PART_BYTES + 1), appWith(200 * 1024 * 1024));
    expect(big.status).toBe(413);
    expect(big.body.error.code).toBe('file_too_large');
    expect(await partsOf(id)).toEqual([]);
  });

  describe('the sweep', () => {
    const sweeper = () => uploadSweeper({ meta, blobs, clock, log: { log: (_level, message) => void logged.push(message) } });

    it('deletes the parts of uploads that expired untouched, were cancelled or completed; keeps live ones', async () => {
      const cancelled = await createUpload(10);
      await post(`/v1/uploads/${cancelled}/parts`, part(5));
      // A cancel whose delete of the parts never ran (the process died in between).
      await meta.updateUpload(cancelled, ['pending'], { status: 'cancelled' });
      const expiring = await createUpload(10);
      await post(`/v1/uploads/${expiring}/parts`, part(5));
      now += HOUR - 1;
      const fresh = await createUpload(10);
      await post(`/v1/uploads/${fresh}/parts`, part(5));
      now += 1;

      await sweeper().sweep();
      expect(await partsOf(cancelled)).toEqual([]);
      expect(await partsOf(expiring)).toEqual([]);
      expect((await meta.getUpload('default', expiring))?.status).toBe('expired');
      expect(await partsOf(fresh)).toHaveLength(1);
      expect((await meta.getUpload('default', fresh))?.status).toBe('pending');
      expect(logged).toContain('upload parts swept');
    });

    it('deletes a part no record names only once a second sweep still finds it so, or at start-up', async () => {
      const id = await createUpload(10);
      // A part object whose record was never written: a request storing it right now, or a crash.
      await blobs.put(`uploads/${id}/part_${'o'.repeat(24)}`, 'orphan');
      const sweep = sweeper();
      expect(await sweep.sweep()).toEqual({ uploads: 0, parts: 0 });
      expect(await partsOf(id)).toHaveLength(1);
      expect(await sweep.sweep()).toEqual({ uploads: 1, parts: 1 });
      expect(await partsOf(id)).toEqual([]);

      await blobs.put(`uploads/${id}/part_${'p'.repeat(24)}`, 'orphan');
      expect(await sweeper().sweep({ listedBeforeServing: true })).toEqual({ uploads: 1, parts: 1 });
      expect(await partsOf(id)).toEqual([]);

      // A live upload keeps its recorded parts; at start-up its unrecorded ones go.
      const recorded = (await post(`/v1/uploads/${id}/parts`, part(5))).body.id as string;
      await blobs.put(`uploads/${id}/part_${'q'.repeat(24)}`, 'orphan');
      expect(await sweeper().sweep()).toEqual({ uploads: 0, parts: 0 });
      expect(await sweeper().sweep({ listedBeforeServing: true })).toEqual({ uploads: 1, parts: 1 });
      expect(await partsOf(id)).toEqual([`uploads/${id}/${recorded}`]);
    });
  });
});
