// The Uploads routes in process, with a clock the test moves: an upload expires an hour after it
// was created; a part over 64 MB is refused with 413 and stores nothing. Complete checks the file
// from the parts' summaries and reads back only its first request line; parts stored without a
// summary (by older code) are summarized again, by reading them all.
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { FsBlobStore } from '../../../shared/adapters/local/fs-blob-store.js';
import { createApiApp } from '../../../shared/api/app.js';
import type { BlobStore, ByteRange, Clock } from '../../../shared/ports.js';
import { DEFAULT_COMPLETE_LEASE_MS, MAX_PART_BYTES } from '../../../shared/uploads/model.js';
import { CORPUS, CORPUS_LIMITS } from '../../fixtures/bad/generate.js';
import { postTo } from '../../support/api-request.js';
import { MemoryMetaStore } from '../../support/memory-stores.js';

describe('Uploads routes', () => {
  let dir: string;
  let blobs: FsBlobStore;
  let now = Date.UTC(2026, 10, 1);
  /** The clock's sleeps: each moves the clock on by its length, unless a test takes them over with onSleep. */
  const sleeps: number[] = [];
  let onSleep: ((ms: number) => Promise<void>) | undefined;
  const clock: Clock = {
    now: () => now,
    sleep: async (ms) => {
      sleeps.push(ms);
      if (onSleep) return onSleep(ms);
      now += ms;
    },
  };
  /** Joins of the parts (the store's concat), each through `aroundConcat` when a test sets it. */
  let concats = 0;
  let aroundConcat: ((join: () => Promise<{ bytes: number }>) => Promise<{ bytes: number }>) | undefined;
  let meta: MemoryMetaStore;
  let app: ReturnType<typeof createApiApp>;
  /** The reads of the store: [key, range] each. */
  const reads: Array<[string, ByteRange | undefined]> = [];
  const appWith = (limits: { maxFileBytes: number; maxLineBytes: number; maxRequestsPerBatch: number }) => {
    const counted: BlobStore = Object.assign(Object.create(blobs) as BlobStore, {
      get: (key: string, range?: ByteRange) => {
        reads.push([key, range]);
        return blobs.get(key, range);
      },
      concat: (...args: Parameters<BlobStore['concat']>) => {
        concats++;
        const join = () => blobs.concat(...args);
        return aroundConcat ? aroundConcat(join) : join();
      },
    });
    return createApiApp({
      meta: meta.asMetaStore(),
      blobs: counted,
      lifecycle: {
        start: async () => undefined,
        allChunksDone: async () => undefined,
        cancelled: async () => undefined,
        state: async () => 'running',
      },
      clock,
      log: { log: () => undefined } as never,
      apiKeys: undefined,
      limits: { minCompletionWindowMs: 3_600_000, maxCompletionWindowMs: 86_400_000, ...limits },
    });
  };

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'uploads-api-'));
    blobs = new FsBlobStore(dir);
    // The store judges files live by the same clock as the routes.
    meta = new MemoryMetaStore(() => now);
    app = appWith({ maxFileBytes: 200 * 1024 * 1024, maxLineBytes: 1_000_000, maxRequestsPerBatch: 10 });
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const post = (url: string, body?: unknown, on = app) => postTo(on, url, body);
  const part = (data: Uint8Array<ArrayBuffer> | string) => {
    const form = new FormData();
    form.set('data', new Blob([data]), 'part');
    return form;
  };
  const line = '{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"batch-test-model"}}\n';

  it('expires an upload an hour after its creation', async () => {
    const created = await post('/v1/uploads', {
      filename: 'x.jsonl',
      purpose: 'batch',
      bytes: 3 * line.length,
      mime_type: 'application/jsonl',
    });
    expect(created.status).toBe(200);
    const id = created.body.id as string;
    const first = await post(`/v1/uploads/${id}/parts`, part(line));
    expect(first.status).toBe(200);

    now += 3_600_000 - 1;
    expect((await post(`/v1/uploads/${id}/parts`, part(line))).status).toBe(200);
    now += 1;
    const late = await post(`/v1/uploads/${id}/parts`, part(line));
    expect(late.status).toBe(400);
    expect(late.body.error.code).toBe('upload_expired');
    const complete = await post(`/v1/uploads/${id}/complete`, { part_ids: [first.body.id] });
    expect(complete.body.error.code).toBe('upload_expired');
    // The parts of an expired upload are deleted.
    expect(await blobs.list(`uploads/${id}/`)).toEqual([]);
  });

  it('refuses a part over 64 MB with 413 and keeps nothing of it', async () => {
    const created = await post('/v1/uploads', {
      filename: 'y.jsonl',
      purpose: 'batch',
      bytes: MAX_PART_BYTES + 1,
      mime_type: 'application/jsonl',
    });
    const id = created.body.id as string;
    const big = await post(`/v1/uploads/${id}/parts`, part(new Uint8Array(MAX_PART_BYTES + 1).fill(0x20)));
    expect(big.status).toBe(413);
    expect(big.body.error).toMatchObject({ code: 'file_too_large', param: 'data' });
    expect(await blobs.list(`uploads/${id}/`)).toEqual([]);
    const exact = await post(`/v1/uploads/${id}/parts`, part(new Uint8Array(MAX_PART_BYTES).fill(0x20)));
    expect(exact.status).toBe(200);
  });

  it('refuses on complete a file over the request limit, and keeps the upload pending', async () => {
    const data = line.repeat(11).replace(/"a"/g, () => `"${Math.random()}"`);
    const created = await post('/v1/uploads', {
      filename: 'z.jsonl',
      purpose: 'batch',
      bytes: Buffer.byteLength(data),
      mime_type: 'application/jsonl',
    });
    const id = created.body.id as string;
    const p = await post(`/v1/uploads/${id}/parts`, part(data));
    const complete = await post(`/v1/uploads/${id}/complete`, { part_ids: [p.body.id] });
    expect(complete.status).toBe(400);
    expect(complete.body.error).toMatchObject({ code: 'too_many_tasks', param: 'file' });
    expect((await post(`/v1/uploads/${id}/cancel`)).body.status).toBe('cancelled');
  });

  const stored = async (fileId: string) => {
    const pieces: Buffer[] = [];
    for await (const piece of await blobs.get(`files/${fileId}`)) pieces.push(Buffer.from(piece));
    return Buffer.concat(pieces);
  };

  /** Creates an upload of `data` and sends it in parts cut at `cuts`. */
  const sendParts = async (data: Buffer, cuts: number[], on = app) => {
    const created = await post(
      '/v1/uploads',
      { filename: 'p.jsonl', purpose: 'batch', bytes: data.length, mime_type: 'application/jsonl' },
      on,
    );
    const id = created.body.id as string;
    const bounds = [0, ...[...new Set(cuts)].filter((cut) => cut > 0 && cut < data.length).sort((a, b) => a - b), data.length];
    const partIds: string[] = [];
    for (let i = 0; i + 1 < bounds.length; i++) {
      partIds.push(
        (await post(`/v1/uploads/${id}/parts`, part(new Uint8Array(data.subarray(bounds[i], bounds[i + 1]))), on)).body.id as string,
      );
    }
    return { id, partIds };
  };

  /** Creates an upload of `data`, sends it in parts cut at `cuts`, and completes it. */
  const upload = async (
    data: Buffer,
    cuts: number[],
    options: { on?: ReturnType<typeof createApiApp>; md5?: string; beforeComplete?: (id: string, partIds: string[]) => Promise<void> } = {},
  ) => {
    const on = options.on ?? app;
    const { id, partIds } = await sendParts(data, cuts, on);
    await options.beforeComplete?.(id, partIds);
    reads.length = 0;
    return {
      id,
      partIds,
      complete: await post(`/v1/uploads/${id}/complete`, { part_ids: partIds, ...(options.md5 && { md5: options.md5 }) }, on),
    };
  };

  it('refuses a file sent in parts exactly as /v1/files refuses it whole', async () => {
    const corpusApp = appWith({
      maxFileBytes: Number(CORPUS_LIMITS.MAX_FILE_BYTES),
      maxLineBytes: Number(CORPUS_LIMITS.MAX_LINE_BYTES),
      maxRequestsPerBatch: Number(CORPUS_LIMITS.MAX_REQUESTS_PER_BATCH),
    });
    let refused = 0;
    for (const [name, content] of Object.entries(CORPUS)) {
      if (
        !name.startsWith('upload-') &&
        !['ok-bom.jsonl', 'ok-crlf.jsonl', 'ok-whitespace-lines.jsonl', 'ok-no-trailing-newline.jsonl'].includes(name)
      )
        continue;
      const data = Buffer.from(content);
      if (data.length === 0 || data.length > Number(CORPUS_LIMITS.MAX_FILE_BYTES)) continue;
      const form = new FormData();
      form.set('purpose', 'batch');
      form.set('file', new Blob([new Uint8Array(data)]), name);
      const whole = await corpusApp.request('/v1/files', { method: 'POST', body: form });
      const expected = { status: whole.status, body: (await whole.json()) as any };
      const { complete } = await upload(data, [1, 2, Math.floor(data.length / 3), Math.floor(data.length / 2) + 1], { on: corpusApp });
      if (expected.status === 200) {
        expect(complete.status, name).toBe(200);
        expect((await stored(complete.body.file.id)).equals(data), name).toBe(true);
      } else {
        refused++;
        expect(complete, name).toEqual(expected);
      }
    }
    expect(refused).toBeGreaterThan(20);
  });

  it('reads back only the first request line on complete, and joins the parts byte for byte', async () => {
    const lines = Array.from(
      { length: 10 },
      (_, i) => `{"custom_id":"${i}","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}\n`,
    );
    const data = Buffer.from(`\n \n${lines.join('')}`);
    const { complete } = await upload(data, [1, 2, 30, 31, 200, 400]);
    expect(complete.status).toBe(200);
    // Lines 1 and 2 are blank; line 3, the first request, crosses the parts cut at 30 and 31.
    expect(reads.map(([, range]) => range)).toEqual([
      { start: 3 - 2, end: 30 - 2 },
      { start: 0, end: 1 },
      { start: 0, end: 3 + lines[0]!.length - 31 },
    ]);
    expect((await stored(complete.body.file.id)).equals(data)).toBe(true);
  });

  it('checks the md5 of the joined parts, and stores no file when it differs', async () => {
    const data = Buffer.from(line.repeat(3));
    const md5 = createHash('md5').update(data).digest('hex');
    let files: string[] = [];
    const wrong = await upload(data, [10, 150], {
      md5: 'f'.repeat(32),
      beforeComplete: async () => void (files = await blobs.list('files/')),
    });
    expect(wrong.complete.status).toBe(400);
    expect(wrong.complete.body.error).toMatchObject({ code: 'md5_mismatch', param: 'md5' });
    expect(await blobs.list('files/')).toEqual(files);
    const right = await post(`/v1/uploads/${wrong.id}/complete`, { part_ids: wrong.partIds, md5: md5.toUpperCase() });
    expect(right.status).toBe(200);
    expect(right.body.file.bytes).toBe(data.length);
  });

  it('checks parts stored without a summary by reading them, with the same answers', async () => {
    const withoutSummaries = async (id: string, partIds: string[]) => {
      for (const partId of partIds) {
        const { summary: _, ...older } = (await meta.getUploadPart(id, partId))!;
        await meta.putUploadPart(older);
      }
    };
    const data = Buffer.from(line.repeat(11).replace(/"a"/g, () => `"${Math.random()}"`));
    const many = await upload(data, [50, 500], { beforeComplete: withoutSummaries });
    expect(many.complete.body.error).toMatchObject({ code: 'too_many_tasks', param: 'file' });
    expect(reads.length).toBeGreaterThanOrEqual(3);

    const good = Buffer.from(line.repeat(4));
    const md5 = createHash('md5').update(good).digest('hex');
    const { complete } = await upload(good, [7, 300], { md5, beforeComplete: withoutSummaries });
    expect(complete.status).toBe(200);
    expect((await stored(complete.body.file.id)).equals(good)).toBe(true);
  });

  describe('one join at a time', () => {
    /** A promise and the function that resolves it. */
    const signal = () => {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      return { promise, resolve };
    };
    const complete = (id: string, partIds: string[], md5?: string) =>
      post(`/v1/uploads/${id}/complete`, { part_ids: partIds, ...(md5 && { md5 }) });
    const claimOf = async (id: string) => (await meta.getUpload('default', id))?.completingUntilMs;
    /** Holds the next joins before they read the parts: `joining` once one is held, `release` lets them go on. */
    const holdJoins = () => {
      const joining = signal();
      const released = signal();
      aroundConcat = async (join) => {
        joining.resolve();
        await released.promise;
        return join();
      };
      return { joining: joining.promise, release: released.resolve };
    };

    beforeEach(() => {
      concats = 0;
      aroundConcat = undefined;
      onSleep = undefined;
      sleeps.length = 0;
    });

    it('lets a second complete wait for the join of the first, and answers both with the completed upload', async () => {
      const data = Buffer.from(line.repeat(3));
      const { id, partIds } = await sendParts(data, [40, 200]);
      const held = holdJoins();
      const first = complete(id, partIds);
      await held.joining;

      const waiting = signal();
      onSleep = async () => {
        waiting.resolve();
        await first;
      };
      const second = complete(id, partIds);
      await waiting.promise;
      held.release();

      const [a, b] = await Promise.all([first, second]);
      expect(a.status).toBe(200);
      expect(a.body).toMatchObject({ id, status: 'completed', file: { bytes: data.length } });
      expect(b).toEqual(a);
      expect(concats).toBe(1);
      expect(sleeps).toEqual([500]);
      expect((await stored(a.body.file.id)).equals(data)).toBe(true);
    });

    it('answers 503 with Retry-After when the other join outlasts the wait, and completed once it is done', async () => {
      const data = Buffer.from(line.repeat(2));
      const { id, partIds } = await sendParts(data, [50]);
      const held = holdJoins();
      const first = complete(id, partIds);
      await held.joining;

      const response = await app.request(`/v1/uploads/${id}/complete`, {
        method: 'POST',
        body: JSON.stringify({ part_ids: partIds }),
        headers: { 'content-type': 'application/json' },
      });
      expect(response.status).toBe(503);
      expect(response.headers.get('retry-after')).toBe('5');
      expect(await response.json()).toEqual({
        error: {
          message: `Upload ${id} is still being assembled from its parts by an earlier complete request; repeat the request to get the completed upload.`,
          type: 'server_error',
          param: null,
          code: 'upload_completing',
        },
      });
      // About 20 s of reads, 500 ms apart.
      expect(sleeps).toEqual(Array(40).fill(500));

      held.release();
      const done = await first;
      expect(done.status).toBe(200);
      const again = await complete(id, partIds);
      expect(again.status).toBe(200);
      expect(again.body).toEqual(done.body);
      expect(concats).toBe(1);
    });

    it('takes over a claim whose complete is gone once the claim runs out', async () => {
      const data = Buffer.from(line.repeat(3));
      const { id, partIds } = await sendParts(data, [90]);
      const joining = signal();
      // The first join never ends: its function was stopped mid-join.
      aroundConcat = async () => {
        joining.resolve();
        return new Promise(() => undefined);
      };
      void complete(id, partIds);
      await joining.promise;
      const until = await claimOf(id);
      expect(until).toBe(now + DEFAULT_COMPLETE_LEASE_MS);

      aroundConcat = undefined;
      // Arrives a second before the claim runs out: waits it out, then joins.
      now = until! - 1_000;
      const taken = await complete(id, partIds);
      expect(taken.status).toBe(200);
      expect(taken.body).toMatchObject({ id, status: 'completed', file: { bytes: data.length } });
      expect(sleeps).toEqual([500, 500]);
      expect(concats).toBe(2);
      expect((await stored(taken.body.file.id)).equals(data)).toBe(true);
    });

    it('releases the claim when the join fails, so a retry starts at once', async () => {
      const data = Buffer.from(line.repeat(3));
      const md5 = createHash('md5').update(data).digest('hex');
      const { id, partIds } = await sendParts(data, [10, 150]);

      const wrong = await complete(id, partIds, 'f'.repeat(32));
      expect(wrong.status).toBe(400);
      expect(wrong.body.error).toMatchObject({ code: 'md5_mismatch', param: 'md5' });
      expect(await claimOf(id)).toBeUndefined();

      const missing = await complete(id, [...partIds.slice(1), `part_${'x'.repeat(24)}`]);
      expect(missing.status).toBe(400);
      expect(missing.body.error).toMatchObject({ param: 'part_ids' });
      expect(await claimOf(id)).toBeUndefined();

      const right = await complete(id, partIds, md5);
      expect(right.status).toBe(200);
      expect(right.body.file.bytes).toBe(data.length);
      expect(sleeps).toEqual([]);
    });

    it('answers a cancel during the join as before, to the joining complete and to a waiting one', async () => {
      const data = Buffer.from(line.repeat(2));
      const { id, partIds } = await sendParts(data, [30]);
      const joining = signal();
      const joinMayEnd = signal();
      // Held after the join, before the upload is marked completed: the cancel wins.
      aroundConcat = async (join) => {
        const joined = await join();
        joining.resolve();
        await joinMayEnd.promise;
        return joined;
      };
      const files = await blobs.list('files/');
      const first = complete(id, partIds);
      await joining.promise;
      const waiting = signal();
      const cancelled = signal();
      onSleep = async () => {
        waiting.resolve();
        await cancelled.promise;
      };
      const second = complete(id, partIds);
      await waiting.promise;

      expect((await post(`/v1/uploads/${id}/cancel`)).body.status).toBe('cancelled');
      cancelled.resolve();
      const waited = await second;
      expect(waited.status).toBe(400);
      expect(waited.body.error.code).toBe('upload_not_pending');

      joinMayEnd.resolve();
      const joined = await first;
      expect(joined.status).toBe(400);
      expect(joined.body.error.code).toBe('upload_not_pending');
      // The joined file is deleted again.
      expect(await blobs.list('files/')).toEqual(files);
      expect((await meta.getUpload('default', id))?.status).toBe('cancelled');
    });

    it('answers a cancel that deletes the parts in the middle of the join with upload_not_pending, not a server error', async () => {
      const data = Buffer.from(line.repeat(2));
      const { id, partIds } = await sendParts(data, [30]);
      // Held before the join reads the parts: the cancel deletes them first.
      const held = holdJoins();
      const files = await blobs.list('files/');
      const first = complete(id, partIds);
      await held.joining;
      expect((await post(`/v1/uploads/${id}/cancel`)).body.status).toBe('cancelled');
      held.release();

      const answer = await first;
      expect(answer.status).toBe(400);
      expect(answer.body.error.code).toBe('upload_not_pending');
      expect(await blobs.list('files/')).toEqual(files);
    });
  });
});
