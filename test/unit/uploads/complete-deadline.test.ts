// API_ROUTE_DEADLINE in the local runtime, through the official openai SDK against the app in
// process, with a blob store whose join is slow: a complete still joining at the deadline answers
// 503 in OpenAI's envelope with Retry-After (the SDK would retry on its own; here it does not), the
// join goes on in the process (there is nowhere to hand it off to), a repeated complete meanwhile
// answers 503 `upload_completing` instead of joining again, and once the join is done a repeated
// complete answers the completed upload. Any other route still running at its deadline answers
// 503 `request_timeout`.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import OpenAI, { APIError } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsBlobStore } from '../../../shared/adapters/local/fs-blob-store.js';
import { systemClock } from '../../../shared/adapters/local/system-clock.js';
import { createApiApp } from '../../../shared/api/app.js';
import type { BlobStore } from '../../../shared/ports.js';
import { MemoryMetaStore } from '../../support/memory-stores.js';

const DEADLINE_MS = 300;
const line = (id: string) => `{"custom_id":"${id}","method":"POST","url":"/v1/chat/completions","body":{"model":"batch-test-model"}}\n`;

describe('a route at its deadline, locally', () => {
  let dir: string;
  let openai: OpenAI;
  let concats = 0;
  let joinDelayMs = 0;
  let readDelayMs = 0;
  let fileId = '';
  const logged: Record<string, unknown>[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'deadline-'));
    const fs = new FsBlobStore(dir);
    const slow: BlobStore = Object.assign(Object.create(fs) as BlobStore, {
      concat: async (...args: Parameters<BlobStore['concat']>) => {
        concats++;
        await new Promise((resolve) => setTimeout(resolve, joinDelayMs));
        return fs.concat(...args);
      },
    });
    const meta = new MemoryMetaStore().asMetaStore();
    const getFile = meta.getFile.bind(meta);
    meta.getFile = async (...args) => {
      await new Promise((resolve) => setTimeout(resolve, readDelayMs));
      return getFile(...args);
    };
    const app = createApiApp({
      meta,
      blobs: slow,
      lifecycle: {
        start: async () => undefined,
        allChunksDone: async () => undefined,
        cancelled: async () => undefined,
        state: async () => 'running',
      },
      clock: systemClock,
      log: { log: (level, message, fields) => logged.push({ level, message, ...fields }) },
      apiKeys: undefined,
      limits: { maxFileBytes: 1_000_000, minCompletionWindowMs: 3_600_000, maxCompletionWindowMs: 86_400_000 },
      routeDeadlineMs: DEADLINE_MS,
    });
    openai = new OpenAI({
      baseURL: 'http://in-process/v1',
      apiKey: 'unused',
      maxRetries: 0,
      fetch: async (input, init) => app.request(new Request(input, init)),
    });
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('answers 503 with Retry-After at the deadline; the join goes on, once, and a repeated complete answers the completed upload', async () => {
    const data = line('a') + line('b');
    const upload = await openai.uploads.create({
      filename: 'slow.jsonl',
      purpose: 'batch',
      bytes: data.length,
      mime_type: 'application/jsonl',
    });
    const parts = [];
    for (const piece of [line('a'), line('b')])
      parts.push(await openai.uploads.parts.create(upload.id, { data: new File([piece], 'part') }));
    joinDelayMs = 5_000;
    const startedAt = Date.now();
    const first = await openai.uploads.complete(upload.id, { part_ids: parts.map((p) => p.id) }).catch((error: unknown) => error);
    expect(first).toBeInstanceOf(APIError);
    expect(first).toMatchObject({ status: 503, code: 'request_timeout', type: 'server_error' });
    expect((first as APIError).headers?.get('retry-after')).toBe('5');
    expect(Date.now() - startedAt).toBeLessThan(5_000);
    // While the join goes on, a repeated complete waits for it until its own deadline, and says so.
    const second = await openai.uploads.complete(upload.id, { part_ids: parts.map((p) => p.id) }).catch((error: unknown) => error);
    expect(second).toMatchObject({ status: 503, code: 'upload_completing' });
    expect((second as APIError).headers?.get('retry-after')).toBe('5');
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, startedAt + 5_200 - Date.now())));
    const done = await openai.uploads.complete(upload.id, { part_ids: parts.map((p) => p.id) });
    expect(done.status).toBe('completed');
    expect(await (await openai.files.content(done.file!.id)).text()).toBe(data);
    expect(concats).toBe(1);
    fileId = done.file!.id;
    joinDelayMs = 0;
  }, 15_000);

  it('answers 503 request_timeout in the envelope for any route still running at its deadline', async () => {
    readDelayMs = 3_000;
    const startedAt = Date.now();
    const error = await openai.files.retrieve(fileId).catch((caught: unknown) => caught);
    readDelayMs = 0;
    expect(error).toMatchObject({ status: 503, code: 'request_timeout', type: 'server_error', param: null });
    expect((error as APIError).message).toContain('did not finish within');
    expect((error as APIError).headers?.get('retry-after')).toBe('5');
    expect(Date.now() - startedAt).toBeLessThan(3_000);
    // A quick route is untouched.
    expect(await openai.files.retrieve(fileId)).toMatchObject({ id: fileId, bytes: expect.any(Number) });
    expect(logged.filter((entry) => entry.level === 'error')).toEqual([]);
  }, 15_000);
});
