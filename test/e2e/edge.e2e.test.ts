// What a tenant, or a broken client, can do to the HTTP edge of the real service (two projects'
// keys, the official openai SDK and raw sockets), and what it sees: a dropped or cut upload, a
// header flood, a huge JSON body, ids of any length, odd metadata keys and filenames, sloppy
// completion windows, parts past an upload's bytes. Nothing of a refused request is stored, the
// other tenant sees nothing, /healthz answers after each, the process never exits, and every line it
// writes is one JSON object with no stack trace.
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type OpenAI from 'openai';
import { toFile } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLines, client, waitForBatch } from '../support/e2e.js';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';

const LINES = `${chatLines(2, { model: 'batch-test-model' })
  .map((line) => JSON.stringify(line))
  .join('\n')}\n`;
const LONG_ID = 'f'.repeat(5_000);

/** Sends raw bytes, optionally closes the socket at once (a client that goes away), and reads the answer. */
function rawRequest(port: number, bytes: Buffer | string, options: { leave?: boolean } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let answer = '';
    socket.on('data', (chunk) => {
      answer += chunk.toString('latin1');
    });
    socket.on('error', () => resolve(answer));
    socket.on('close', () => resolve(answer));
    socket.on('connect', () => {
      socket.write(bytes, (error) => {
        if (error) return reject(error);
        if (options.leave) setTimeout(() => socket.destroy(), 100);
      });
    });
  });
}

async function expectError(promise: Promise<unknown>, status: number, match: Record<string, unknown> = {}) {
  const error = (await promise.then(
    () => undefined,
    (e: unknown) => e,
  )) as { status?: number; error?: Record<string, unknown> } | undefined;
  expect(error, 'expected the call to fail').toBeDefined();
  expect(error!.status).toBe(status);
  expect(error!.error).toMatchObject(match);
}

describe('the HTTP edge under abuse', () => {
  let service: ServiceProcess;
  let alice: OpenAI;
  let bob: OpenAI;
  /** What earlier processes wrote (one restart below). */
  let earlierLogs = '';

  beforeAll(async () => {
    service = await startServiceProcess({ env: { API_KEYS: 'alice-key:alpha,bob-key:beta', MAX_FILE_BYTES: '100000' } });
    alice = client(service.baseURL, 'alice-key');
    bob = client(service.baseURL, 'bob-key');
  });
  afterAll(async () => {
    await service?.removeDataDir();
  });

  /** Files and objects on disk, temporary ones included: what a refused request must not change. */
  const stored = async () => ({
    alice: (await alice.files.list({ limit: 100 })).data.map((f) => f.id).sort(),
    bob: (await bob.files.list({ limit: 100 })).data.map((f) => f.id).sort(),
    objects: (await readdir(path.join(service.dataDir, 'blobs'), { recursive: true, withFileTypes: true }).catch(() => []))
      .filter((entry) => entry.isFile())
      .map((entry) => path.join(entry.parentPath, entry.name))
      .sort(),
  });
  const healthy = async () => {
    const health = await fetch(`${service.origin}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({
      status: 'ok',
      escaped_errors: 0,
      webhooks_delivered: 0,
      webhooks_retried: 0,
      webhooks_given_up: 0,
    });
  };
  const multipartHead = (route: string, contentLength: number) =>
    `POST ${route} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer alice-key\r\nContent-Type: multipart/form-data; boundary=zz\r\nContent-Length: ${contentLength}\r\n\r\n`;
  const fileHeaders = (field: string) =>
    `--zz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--zz\r\nContent-Disposition: form-data; name="${field}"; filename="a.jsonl"\r\n\r\n`;

  it('answers a multipart body with no closing boundary 400 invalid_multipart, and stores nothing (the curl of the issue)', async () => {
    const upload = await alice.uploads.create({ filename: 'u.jsonl', purpose: 'batch', bytes: 1000, mime_type: 'application/jsonl' });
    const before = await stored();
    for (const [route, field] of [
      ['/v1/files', 'file'],
      [`/v1/uploads/${upload.id}/parts`, 'data'],
    ] as const) {
      const response = await fetch(`${service.origin}${route}`, {
        method: 'POST',
        headers: { authorization: 'Bearer alice-key', 'content-type': 'multipart/form-data; boundary=zz' },
        body: `--zz\r\nContent-Disposition: form-data; name="${field}"; filename="a.jsonl"\r\n\r\n{"a":1}\n`,
      });
      expect(response.status).toBe(400);
      expect(((await response.json()) as { error: { code: string } }).error.code).toBe('invalid_multipart');
      await healthy();
    }
    expect(await stored()).toEqual(before);
    await alice.uploads.cancel(upload.id);
  });

  it('goes on when clients go away after the file part headers or in the middle of the bytes', async () => {
    const upload = await alice.uploads.create({ filename: 'u.jsonl', purpose: 'batch', bytes: 1000, mime_type: 'application/jsonl' });
    const before = await stored();
    for (const [route, field] of [
      ['/v1/files', 'file'],
      [`/v1/uploads/${upload.id}/parts`, 'data'],
    ] as const) {
      await rawRequest(service.port, multipartHead(route, 100_000) + fileHeaders(field), { leave: true });
      await rawRequest(service.port, `${multipartHead(route, 100_000) + fileHeaders(field)}{"custom_id":"a","method":`, { leave: true });
      await healthy();
    }
    expect(await stored()).toEqual(before);
    await alice.uploads.cancel(upload.id);
  });

  it("answers headers over Node's limit 431 and malformed requests 400, each logged as one line with the parser's code", async () => {
    const flood = await rawRequest(service.port, `GET /v1/files HTTP/1.1\r\nHost: x\r\nX-Flood: ${'a'.repeat(40_000)}\r\n\r\n`);
    expect(flood).toMatch(/^HTTP\/1\.1 431 /);
    const garbage = await rawRequest(service.port, 'NOT HTTP AT ALL\r\n\r\n');
    expect(garbage).toMatch(/^HTTP\/1\.1 400 /);
    await healthy();
    const refusals = service
      .logs()
      .split('\n')
      .filter((line) => line.includes('malformed HTTP request refused'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(refusals.map((line) => line.code)).toEqual(expect.arrayContaining(['HPE_HEADER_OVERFLOW']));
    expect(service.logs()).not.toContain('a'.repeat(100));
  });

  it('answers a JSON body over 1 MB 413 request_too_large', async () => {
    const response = await fetch(`${service.baseURL}/batches`, {
      method: 'POST',
      headers: { authorization: 'Bearer alice-key', 'content-type': 'application/json' },
      body: JSON.stringify({ input_file_id: 'x', endpoint: 'x'.repeat(2_000_000), completion_window: '24h' }),
    });
    expect(response.status).toBe(413);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe('request_too_large');
    await healthy();
  });

  it('answers ids of any length 404 on routes and 400 in bodies, for every tenant alike', async () => {
    const before = await stored();
    await expectError(alice.files.retrieve(LONG_ID), 404, { code: 'not_found' });
    await expectError(alice.files.content(LONG_ID), 404, { code: 'not_found' });
    await expectError(alice.files.delete(LONG_ID), 404, { code: 'not_found' });
    await expectError(alice.batches.retrieve(`batch_${LONG_ID}`), 404, { code: 'not_found' });
    await expectError(alice.batches.cancel(`batch_${LONG_ID}`), 404, { code: 'not_found' });
    await expectError(alice.uploads.cancel(`upload_${LONG_ID}`), 404, { code: 'not_found' });
    await expectError(alice.batches.create({ input_file_id: LONG_ID, endpoint: '/v1/chat/completions', completion_window: '24h' }), 400, {
      param: 'input_file_id',
    });
    const upload = await alice.uploads.create({ filename: 'u.jsonl', purpose: 'batch', bytes: 10, mime_type: 'application/jsonl' });
    await expectError(alice.uploads.complete(upload.id, { part_ids: [`part_${LONG_ID}`] }), 400, { param: 'part_ids' });
    await alice.uploads.cancel(upload.id);
    const page = await alice.batches.list({ after: LONG_ID });
    expect(page.data).toEqual([]);
    expect(await stored()).toEqual(before);
    await healthy();
  });

  it('keeps metadata keys named constructor, toString or hasOwnProperty, and refuses __proto__', async () => {
    const file = await alice.files.create({ file: await toFile(Buffer.from(LINES), 'm.jsonl'), purpose: 'batch' });
    const metadata = { constructor: 'a', toString: 'b', hasOwnProperty: 'c', valueOf: 'd' };
    const batch = await alice.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
      metadata,
    });
    expect(batch.metadata).toEqual(metadata);
    expect((await waitForBatch(alice, batch.id)).metadata).toEqual(metadata);
    const before = (await alice.batches.list({ limit: 100 })).data.length;
    const response = await fetch(`${service.baseURL}/batches`, {
      method: 'POST',
      headers: { authorization: 'Bearer alice-key', 'content-type': 'application/json' },
      body: `{"input_file_id":"${file.id}","endpoint":"/v1/chat/completions","completion_window":"24h","metadata":{"__proto__":"x"}}`,
    });
    expect(response.status).toBe(400);
    expect((await alice.batches.list({ limit: 100 })).data.length).toBe(before);
  });

  it('keeps UTF-8 filenames as sent, downloads them with filename*, and refuses control characters', async () => {
    const file = await alice.files.create({ file: await toFile(Buffer.from(LINES), '评测数据.jsonl'), purpose: 'batch' });
    expect(file.filename).toBe('评测数据.jsonl');
    expect((await alice.files.retrieve(file.id)).filename).toBe('评测数据.jsonl');
    const download = await alice.files.content(file.id);
    expect(download.headers.get('content-disposition')).toBe(
      `attachment; filename="????.jsonl"; filename*=UTF-8''${encodeURIComponent('评测数据.jsonl')}`,
    );
    expect(await download.text()).toBe(LINES);

    const before = await stored();
    await expectError(alice.files.create({ file: await toFile(Buffer.from(LINES), 'a\u2028b.jsonl'), purpose: 'batch' }), 400, {
      code: 'invalid_filename',
    });
    await expectError(
      alice.uploads.create({ filename: 'a\u0001b.jsonl', purpose: 'batch', bytes: 10, mime_type: 'application/jsonl' }),
      400,
      { code: 'invalid_filename', param: 'filename' },
    );
    expect(await stored()).toEqual(before);
  });

  it('accepts one spelling of each completion window and answers it', async () => {
    const file = await alice.files.create({ file: await toFile(Buffer.from(LINES), 'w.jsonl'), purpose: 'batch' });
    const before = (await alice.batches.list({ limit: 100 })).data.length;
    for (const window of [' 24h', '24h\n', '86400s', '1440m', '00024h']) {
      await expectError(
        alice.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: window as '24h' }),
        400,
        { param: 'completion_window' },
      );
    }
    expect((await alice.batches.list({ limit: 100 })).data.length).toBe(before);
    const batch = await alice.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '48h' as '24h',
    });
    expect(batch.completion_window).toBe('48h');
    expect((await waitForBatch(alice, batch.id)).completion_window).toBe('48h');
  });

  it('refuses a part past the bytes of its upload, and keeps nothing of it', async () => {
    const upload = await alice.uploads.create({ filename: 'p.jsonl', purpose: 'batch', bytes: 10, mime_type: 'application/jsonl' });
    await alice.uploads.parts.create(upload.id, { data: await toFile(Buffer.from('0123456'), 'part') });
    const before = await stored();
    await expectError(alice.uploads.parts.create(upload.id, { data: await toFile(Buffer.alloc(60_000, 0x20), 'part') }), 400, {
      code: 'upload_size_exceeded',
    });
    await expectError(alice.uploads.parts.create(upload.id, { data: await toFile(Buffer.from('0123'), 'part') }), 400, {
      code: 'upload_size_exceeded',
    });
    expect(await stored()).toEqual(before);
    await alice.uploads.parts.create(upload.id, { data: await toFile(Buffer.from('789'), 'part') });
    await alice.uploads.cancel(upload.id);
  });

  it('deletes at start-up a part object that no record names, keeping the parts of live uploads', async () => {
    const upload = await alice.uploads.create({ filename: 's.jsonl', purpose: 'batch', bytes: 100, mime_type: 'application/jsonl' });
    const part = await alice.uploads.parts.create(upload.id, { data: await toFile(Buffer.from('{"a":1}\n'), 'part') });
    // A part stored by a process that died before it recorded the part.
    const partsDir = path.join(service.dataDir, 'blobs', 'uploads', upload.id);
    await mkdir(partsDir, { recursive: true });
    await writeFile(path.join(partsDir, `part_${'o'.repeat(24)}`), 'orphan');
    earlierLogs += service.logs();
    service = await service.restart();
    alice = client(service.baseURL, 'alice-key');
    bob = client(service.baseURL, 'bob-key');
    expect((await readdir(partsDir)).sort()).toEqual([part.id]);
    await alice.uploads.cancel(upload.id);
    await healthy();
  });

  it('wrote only structured lines, never a stack trace, a key or a body', () => {
    const logs = earlierLogs + service.logs();
    for (const line of logs.split('\n').filter(Boolean)) expect(() => JSON.parse(line), line).not.toThrow();
    expect(logs).not.toMatch(/\n\s+at /);
    expect(logs).not.toContain('alice-key');
    expect(logs).not.toContain('{"a":1}');
  });
});
