// The Uploads routes in process, with a clock the test moves: an upload expires an hour after it
// was created; a part over 64 MB is refused with 413 and stores nothing.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DynamoMetaStore } from '../../shared/adapters/aws/dynamo-meta-store.js';
import { startEmbeddedDynamo, type EmbeddedDynamo } from '../../shared/adapters/local/embedded-dynamo.js';
import { FsBlobStore } from '../../shared/adapters/local/fs-blob-store.js';
import { createApiApp } from '../../shared/api/app.js';
import { MAX_PART_BYTES } from '../../shared/api/uploads.js';
import type { Clock } from '../../shared/ports.js';

describe('Uploads routes', () => {
  let dynamo: EmbeddedDynamo;
  let dir: string;
  let blobs: FsBlobStore;
  let now = Date.UTC(2026, 10, 1);
  const clock: Clock = { now: () => now, sleep: async () => undefined };
  let app: ReturnType<typeof createApiApp>;

  beforeAll(async () => {
    dynamo = await startEmbeddedDynamo({ tableName: `uploads-${process.pid}-${Date.now()}` });
    dir = await mkdtemp(path.join(os.tmpdir(), 'uploads-api-'));
    blobs = new FsBlobStore(dir);
    app = createApiApp({
      meta: new DynamoMetaStore({ client: dynamo.client, tableName: dynamo.tableName }),
      blobs,
      lifecycle: { start: async () => undefined, allChunksDone: async () => undefined, cancelled: async () => undefined },
      clock,
      log: { log: () => undefined } as never,
      apiKeys: undefined,
      limits: { maxFileBytes: 200 * 1024 * 1024, minCompletionWindowMs: 3_600_000, maxCompletionWindowMs: 86_400_000, maxLineBytes: 1_000_000, maxRequestsPerBatch: 10 },
    });
  });
  afterAll(async () => {
    await dynamo?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const post = async (url: string, body?: unknown) => {
    const response = await app.request(url, {
      method: 'POST',
      ...(body instanceof FormData ? { body } : body === undefined ? {} : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
    });
    return { status: response.status, body: (await response.json()) as any };
  };
  const part = (data: Uint8Array<ArrayBuffer> | string) => {
    const form = new FormData();
    form.set('data', new Blob([data]), 'part');
    return form;
  };
  const line = '{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"batch-test-model"}}\n';

  it('expires an upload an hour after its creation', async () => {
    const created = await post('/v1/uploads', { filename: 'x.jsonl', purpose: 'batch', bytes: line.length, mime_type: 'application/jsonl' });
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
    const created = await post('/v1/uploads', { filename: 'y.jsonl', purpose: 'batch', bytes: MAX_PART_BYTES + 1, mime_type: 'application/jsonl' });
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
    const created = await post('/v1/uploads', { filename: 'z.jsonl', purpose: 'batch', bytes: Buffer.byteLength(data), mime_type: 'application/jsonl' });
    const id = created.body.id as string;
    const p = await post(`/v1/uploads/${id}/parts`, part(data));
    const complete = await post(`/v1/uploads/${id}/complete`, { part_ids: [p.body.id] });
    expect(complete.status).toBe(400);
    expect(complete.body.error).toMatchObject({ code: 'too_many_tasks', param: 'file' });
    expect((await post(`/v1/uploads/${id}/cancel`)).body.status).toBe('cancelled');
  });
});
