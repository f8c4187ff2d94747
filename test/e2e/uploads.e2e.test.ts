// The Uploads API through the official openai SDK, unchanged: create, parts (in parallel, out of
// order), complete with the order and an md5, cancel; the File it makes is the one /v1/files
// shows, and a batch runs on it. Another project's upload is 404; bad content is refused on
// complete with the envelope, and makes no file.
import { createHash } from 'node:crypto';
import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLines, client, collectResults, waitForBatch } from '../support/e2e.js';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';

function jsonl(lines: unknown[]): Buffer {
  return Buffer.from(`${lines.map((line) => JSON.stringify(line)).join('\n')}\n`);
}

function split(data: Buffer, parts: number): Buffer[] {
  const size = Math.ceil(data.length / parts);
  return Array.from({ length: parts }, (_, i) => data.subarray(i * size, (i + 1) * size));
}

async function expectError(promise: Promise<unknown>, status: number, code?: string | null) {
  const error = (await promise.then(
    () => undefined,
    (e: unknown) => e,
  )) as { status?: number; error?: { code?: string | null; type?: string } } | undefined;
  expect(error, 'expected the call to fail').toBeDefined();
  expect(error!.status).toBe(status);
  if (code !== undefined) expect(error!.error?.code).toBe(code);
  expect(error!.error?.type).toBe('invalid_request_error');
}

describe('the Uploads API', () => {
  let service: ServiceProcess;
  let alice: OpenAI;
  let bob: OpenAI;

  beforeAll(async () => {
    service = await startServiceProcess({ env: { API_KEYS: 'alice-key:alpha,bob-key:beta', MAX_FILE_BYTES: '2000000' } });
    alice = client(service.baseURL, 'alice-key');
    bob = client(service.baseURL, 'bob-key');
  });
  afterAll(async () => {
    await service?.removeDataDir();
  });

  it('creates, takes parts in any order, completes into a File, and the batch runs', async () => {
    const data = jsonl(chatLines(300, { model: 'batch-test-model' }));
    const upload = await alice.uploads.create({
      filename: 'big.jsonl',
      purpose: 'batch',
      bytes: data.length,
      mime_type: 'application/jsonl',
    });
    expect(upload).toMatchObject({
      object: 'upload',
      status: 'pending',
      bytes: data.length,
      filename: 'big.jsonl',
      purpose: 'batch',
      file: null,
    });
    expect(upload.expires_at - upload.created_at).toBe(3600);

    const pieces = split(data, 4);
    // Sent in parallel and in reverse; the order is the one named on complete.
    const parts = await Promise.all(
      pieces.map((piece, i) => alice.uploads.parts.create(upload.id, { data: new File([new Uint8Array(piece)], `part-${i}`) })),
    );
    for (const part of parts) expect(part).toMatchObject({ object: 'upload.part', upload_id: upload.id });
    expect(new Set(parts.map((p) => p.id)).size).toBe(4);

    const md5 = createHash('md5').update(data).digest('hex');
    const done = await alice.uploads.complete(upload.id, { part_ids: parts.map((p) => p.id), md5 });
    expect(done.status).toBe('completed');
    expect(done.file).toMatchObject({ object: 'file', bytes: data.length, filename: 'big.jsonl', purpose: 'batch', status: 'processed' });

    // The same File object as /v1/files gives, with the exact bytes.
    expect(await alice.files.retrieve(done.file!.id)).toEqual(done.file);
    expect(Buffer.from(await (await alice.files.content(done.file!.id)).arrayBuffer()).equals(data)).toBe(true);
    expect((await alice.files.list({ purpose: 'batch' })).data.map((f) => f.id)).toContain(done.file!.id);

    // Completing again (a retry) answers the same; parts can no longer be added.
    expect((await alice.uploads.complete(upload.id, { part_ids: parts.map((p) => p.id) })).file!.id).toBe(done.file!.id);
    await expectError(alice.uploads.parts.create(upload.id, { data: new File(['x'], 'x') }), 400, 'upload_not_pending');
    await expectError(alice.uploads.cancel(upload.id), 400, 'upload_not_pending');

    const batch = await alice.batches.create({ input_file_id: done.file!.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
    const finished = await waitForBatch(alice, batch.id);
    expect(finished.status).toBe('completed');
    expect(finished.request_counts).toEqual({ total: 300, completed: 300, failed: 0 });
    const results = await collectResults(alice, finished);
    expect(results.ids.size).toBe(300);
    expect(results.duplicates).toEqual([]);
  });

  it('checks the size and the md5 on complete, and a failed complete changes nothing', async () => {
    const data = jsonl(chatLines(20, { model: 'batch-test-model' }));
    const upload = await alice.uploads.create({
      filename: 'a.jsonl',
      purpose: 'batch',
      bytes: data.length,
      mime_type: 'application/jsonl',
    });
    const [first, second] = split(data, 2);
    const p1 = await alice.uploads.parts.create(upload.id, { data: new File([new Uint8Array(first!)], 'a') });
    await expectError(alice.uploads.complete(upload.id, { part_ids: [p1.id] }), 400, 'upload_size_mismatch');
    const p2 = await alice.uploads.parts.create(upload.id, { data: new File([new Uint8Array(second!)], 'b') });
    // The wrong order joins the right number of bytes into a file that is not JSONL at its start.
    await expectError(alice.uploads.complete(upload.id, { part_ids: [p2.id, p1.id] }), 400);
    await expectError(alice.uploads.complete(upload.id, { part_ids: [p1.id, p2.id], md5: '0'.repeat(32) }), 400, 'md5_mismatch');
    await expectError(alice.uploads.complete(upload.id, { part_ids: [p1.id, 'part_nope'] }), 400);
    await expectError(alice.uploads.complete(upload.id, { part_ids: [p1.id, p1.id] }), 400);
    const before = (await alice.files.list()).data.length;
    const done = await alice.uploads.complete(upload.id, { part_ids: [p1.id, p2.id] });
    expect(done.status).toBe('completed');
    expect((await alice.files.list()).data.length).toBe(before + 1);
  });

  it('cancels: no parts or complete after, and cancel again answers the same', async () => {
    const upload = await alice.uploads.create({ filename: 'c.jsonl', purpose: 'batch', bytes: 10, mime_type: 'application/jsonl' });
    const part = await alice.uploads.parts.create(upload.id, { data: new File(['{"a":1}\n'], 'c') });
    const cancelled = await alice.uploads.cancel(upload.id);
    expect(cancelled).toMatchObject({ id: upload.id, status: 'cancelled', file: null });
    expect((await alice.uploads.cancel(upload.id)).status).toBe('cancelled');
    await expectError(alice.uploads.parts.create(upload.id, { data: new File(['{}'], 'x') }), 400, 'upload_not_pending');
    await expectError(alice.uploads.complete(upload.id, { part_ids: [part.id] }), 400, 'upload_not_pending');
  });

  it("answers 404 for another project's upload, exactly as for a missing one", async () => {
    const upload = await alice.uploads.create({ filename: 'd.jsonl', purpose: 'batch', bytes: 8, mime_type: 'application/jsonl' });
    const part = await alice.uploads.parts.create(upload.id, { data: new File(['{"a":1}\n'], 'd') });
    await expectError(bob.uploads.parts.create(upload.id, { data: new File(['{}'], 'x') }), 404, 'not_found');
    await expectError(bob.uploads.complete(upload.id, { part_ids: [part.id] }), 404, 'not_found');
    await expectError(bob.uploads.cancel(upload.id), 404, 'not_found');
    await expectError(bob.uploads.cancel('upload_doesnotexist'), 404, 'not_found');
    // Alice's upload is untouched.
    expect((await alice.uploads.complete(upload.id, { part_ids: [part.id] })).status).toBe('completed');
  });

  it('refuses bad creates and bad content with the envelope', async () => {
    await expectError(
      alice.uploads.create({ filename: 'e.jsonl', purpose: 'batch', bytes: 3_000_000, mime_type: 'application/jsonl' }),
      413,
      'file_too_large',
    );
    await expectError(alice.uploads.create({ filename: 'e.jsonl', purpose: 'fine-tune', bytes: 10, mime_type: 'application/jsonl' }), 400);
    await expectError(
      alice.uploads.create({ filename: 'e.jsonl', purpose: 'batch', bytes: 0, mime_type: 'application/jsonl' }),
      400,
      'empty_file',
    );
    await expectError(alice.uploads.create({ filename: 'e.jsonl', purpose: 'batch' } as never), 400);

    const text = Buffer.from('PK\u0003\u0004 this is a zip file, not JSONL\n');
    const upload = await alice.uploads.create({ filename: 'e.zip', purpose: 'batch', bytes: text.length, mime_type: 'application/zip' });
    const part = await alice.uploads.parts.create(upload.id, { data: new File([new Uint8Array(text)], 'e') });
    const before = (await alice.files.list()).data.length;
    await expectError(alice.uploads.complete(upload.id, { part_ids: [part.id] }), 400, 'invalid_file_format');
    expect((await alice.files.list()).data.length).toBe(before);
    expect((await alice.uploads.cancel(upload.id)).status).toBe('cancelled');
  });

  it('serves the same routes under /v4', async () => {
    const headers = { authorization: 'Bearer alice-key', 'content-type': 'application/json' };
    const data = jsonl(chatLines(2, { model: 'batch-test-model' }));
    const created = await fetch(`${service.origin}/v4/uploads`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ filename: 'v4.jsonl', purpose: 'batch', bytes: data.length, mime_type: 'application/jsonl' }),
    });
    expect(created.status).toBe(200);
    const upload = (await created.json()) as { id: string };
    const form = new FormData();
    form.set('data', new Blob([new Uint8Array(data)]), 'v4.jsonl');
    const partResponse = await fetch(`${service.origin}/v4/uploads/${upload.id}/parts`, {
      method: 'POST',
      headers: { authorization: 'Bearer alice-key' },
      body: form,
    });
    expect(partResponse.status).toBe(200);
    const part = (await partResponse.json()) as { id: string };
    const done = await fetch(`${service.origin}/v4/uploads/${upload.id}/complete`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ part_ids: [part.id] }),
    });
    expect(done.status).toBe(200);
    expect(((await done.json()) as { status: string }).status).toBe('completed');
  });
});
