// The HTTP edge in process, over the real adapters (the DynamoDB MetaStore on dynalite, files on
// disk): what a client sees for ids that cannot be ours, metadata keys named like Object.prototype's,
// JSON bodies over the limit, completion windows, filenames and truncated multipart bodies; and that
// none of them stores or changes anything (an id that cannot be ours does not even reach storage).
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DynamoMetaStore } from '../../../shared/adapters/aws/dynamo-meta-store.js';
import { type EmbeddedDynamo, startEmbeddedDynamo } from '../../../shared/adapters/local/embedded-dynamo.js';
import { FsBlobStore } from '../../../shared/adapters/local/fs-blob-store.js';
import { createApiApp } from '../../../shared/api/app.js';
import type { BlobStore, MetaStore } from '../../../shared/ports.js';

const LINE = '{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"batch-test-model"}}\n';
const LONG_ID = 'x'.repeat(3000);
const HOUR = 3_600_000;

/** Every call of the object's methods, by name. */
function counted<T extends object>(target: T, calls: string[]): T {
  return new Proxy(target, {
    get(object, name, receiver) {
      const value = Reflect.get(object, name, receiver);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        calls.push(String(name));
        return value.apply(object, args);
      };
    },
  });
}

describe('the HTTP edge', () => {
  let dynamo: EmbeddedDynamo;
  let dir: string;
  let app: ReturnType<typeof createApiApp>;
  const storageCalls: string[] = [];

  beforeAll(async () => {
    dynamo = await startEmbeddedDynamo({ tableName: `edge-${process.pid}-${Date.now()}` });
    dir = await mkdtemp(path.join(os.tmpdir(), 'api-edge-'));
    const meta = counted<MetaStore>(new DynamoMetaStore({ client: dynamo.client, tableName: dynamo.tableName }), storageCalls);
    const blobs = counted<BlobStore>(new FsBlobStore(dir), storageCalls);
    app = createApiApp({
      meta,
      blobs,
      lifecycle: {
        start: async () => undefined,
        allChunksDone: async () => undefined,
        cancelled: async () => undefined,
        state: async () => 'running',
      },
      clock: { now: () => Date.now(), sleep: async () => undefined },
      log: { log: () => undefined },
      apiKeys: new Map([
        ['alice-key', 'alpha'],
        ['bob-key', 'beta'],
      ]),
      limits: { maxFileBytes: 100_000, minCompletionWindowMs: 5_000, maxCompletionWindowMs: 336 * HOUR, maxJsonBodyBytes: 10_000 },
    });
  });
  afterAll(async () => {
    await dynamo?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  beforeEach(() => {
    storageCalls.length = 0;
  });

  const call = async (method: string, url: string, init: { json?: unknown; body?: BodyInit; headers?: Record<string, string> } = {}) => {
    const response = await app.request(url, {
      method,
      headers: {
        authorization: 'Bearer alice-key',
        ...(init.json !== undefined && { 'content-type': 'application/json' }),
        ...init.headers,
      },
      body: init.json !== undefined ? JSON.stringify(init.json) : init.body,
    });
    const text = await response.text();
    return { status: response.status, headers: response.headers, text, body: text.startsWith('{') ? JSON.parse(text) : undefined };
  };
  const uploadFile = async (filename: string, content = LINE, key = 'alice-key') => {
    const form = new FormData();
    form.set('purpose', 'batch');
    form.set('file', new Blob([content]), filename);
    return call('POST', '/v1/files', { body: form, headers: { authorization: `Bearer ${key}` } });
  };
  /** What storage holds: the objects on disk (temporary ones too) and the files alice can list. */
  const stored = async () => ({
    objects: (await readdir(dir, { recursive: true, withFileTypes: true }))
      .filter((entry) => entry.isFile())
      .map((entry) => path.join(entry.parentPath, entry.name))
      .sort(),
    files: (await call('GET', '/v1/files')).body.data.map((f: { id: string }) => f.id),
  });
  const healthy = async () => expect((await app.request('/healthz')).status).toBe(200);

  describe('ids that cannot be ours', () => {
    it('answers 404 on every id route without asking storage', async () => {
      const routes: Array<[string, string]> = [
        ['GET', `/v1/files/${LONG_ID}`],
        ['DELETE', `/v1/files/${LONG_ID}`],
        ['GET', `/v1/files/${LONG_ID}/content`],
        ['GET', `/v1/batches/${LONG_ID}`],
        ['POST', `/v1/batches/${LONG_ID}/cancel`],
        ['POST', `/v1/uploads/${LONG_ID}/parts`],
        ['POST', `/v1/uploads/${LONG_ID}/cancel`],
        ['GET', '/v1/files/file-tooshort'],
        ['GET', `/v1/batches/batch_${'a'.repeat(23)}-`],
        ['GET', `/v4/batches/${'batch_'.repeat(400)}`],
      ];
      for (const [method, url] of routes) {
        const answer = await call(method, url);
        expect(answer.status, url.slice(0, 40)).toBe(404);
        expect(answer.body.error.code).toBe('not_found');
        // The answer quotes at most 64 characters of the id.
        expect(answer.body.error.message.length).toBeLessThan(200);
      }
      const complete = await call('POST', `/v1/uploads/${LONG_ID}/complete`, { json: { part_ids: [`part_${'a'.repeat(24)}`] } });
      expect(complete.status).toBe(404);
      expect(storageCalls).toEqual([]);
    });

    it('answers an after= that cannot be ours with the empty page any unknown cursor gets', async () => {
      for (const url of [`/v1/files?after=${LONG_ID}`, `/v1/batches?after=${LONG_ID}`, '/v1/batches?after=file-x']) {
        const answer = await call('GET', url);
        expect(answer.status).toBe(200);
        expect(answer.body).toEqual({ object: 'list', data: [], first_id: null, last_id: null, has_more: false });
      }
      expect(storageCalls).toEqual([]);
    });

    it('refuses an input_file_id or a part id that cannot be ours with 400 naming the field', async () => {
      const batch = await call('POST', '/v1/batches', {
        json: { input_file_id: LONG_ID, endpoint: '/v1/chat/completions', completion_window: '24h' },
      });
      expect(batch.status).toBe(400);
      expect(batch.body.error).toMatchObject({ param: 'input_file_id', type: 'invalid_request_error' });
      expect(batch.body.error.message).toContain('is not a file id');
      expect(storageCalls).toEqual([]);

      const upload = await call('POST', '/v1/uploads', {
        json: { filename: 'a.jsonl', purpose: 'batch', bytes: 10, mime_type: 'application/jsonl' },
      });
      storageCalls.length = 0;
      const complete = await call('POST', `/v1/uploads/${upload.body.id}/complete`, { json: { part_ids: [LONG_ID] } });
      expect(complete.status).toBe(400);
      expect(complete.body.error).toMatchObject({ param: 'part_ids' });
      expect(storageCalls).toEqual([]);
      expect((await call('POST', `/v1/uploads/${upload.body.id}/cancel`)).body.status).toBe('cancelled');
    });
  });

  it('keeps metadata keys named like Object.prototype members, end to end', async () => {
    const file = await uploadFile('m.jsonl');
    const metadata = { constructor: 'a', toString: 'b', hasOwnProperty: 'c', valueOf: 'd', __defineGetter__: 'e', isPrototypeOf: 'f' };
    const created = await call('POST', '/v1/batches', {
      json: { input_file_id: file.body.id, endpoint: '/v1/chat/completions', completion_window: '24h', metadata },
    });
    expect(created.status).toBe(200);
    expect(created.body.metadata).toEqual(metadata);
    const read = await call('GET', `/v1/batches/${created.body.id}`);
    expect(read.body.metadata).toEqual(metadata);
    const listed = await call('GET', '/v1/batches?limit=1');
    expect(listed.body.data[0].metadata).toEqual(metadata);

    const before = await call('GET', '/v1/batches?limit=100');
    const proto = await app.request('/v1/batches', {
      method: 'POST',
      headers: { authorization: 'Bearer alice-key', 'content-type': 'application/json' },
      body: `{"input_file_id":"${file.body.id}","endpoint":"/v1/chat/completions","completion_window":"24h","metadata":{"__proto__":"x"}}`,
    });
    expect(proto.status).toBe(400);
    expect(((await proto.json()) as any).error).toMatchObject({ param: 'metadata.__proto__' });
    expect((await call('GET', '/v1/batches?limit=100')).body.data).toEqual(before.body.data);
  });

  describe('JSON bodies', () => {
    const big = JSON.stringify({ input_file_id: `file-${'a'.repeat(24)}`, endpoint: 'x'.repeat(20_000), completion_window: '24h' });

    it('answers 413 request_too_large past MAX_JSON_BODY_BYTES, by Content-Length and while streaming', async () => {
      for (const route of ['/v1/batches', '/v1/uploads', `/v1/uploads/upload_${'a'.repeat(24)}/complete`]) {
        const declared = await call('POST', route, { body: big, headers: { 'content-type': 'application/json' } });
        expect(declared.status, route).toBe(413);
        expect(declared.body.error).toMatchObject({ code: 'request_too_large', type: 'invalid_request_error' });
      }
      // No Content-Length: the body is read only up to the limit.
      let pulled = 0;
      const chunked = new ReadableStream<Uint8Array>({
        pull(controller) {
          pulled += 1_000;
          if (pulled > 1_000_000) controller.close();
          else controller.enqueue(new Uint8Array(1_000).fill(0x20));
        },
      });
      const streamed = await app.request('/v1/batches', {
        method: 'POST',
        headers: { authorization: 'Bearer alice-key', 'content-type': 'application/json' },
        body: chunked,
        duplex: 'half',
      } as RequestInit);
      expect(streamed.status).toBe(413);
      expect(pulled).toBeLessThan(20_000);
      expect(storageCalls).toEqual([]);
      await healthy();
    });

    it('takes a body just under the limit', async () => {
      const file = await uploadFile('limit.jsonl');
      const body = JSON.stringify({ input_file_id: file.body.id, endpoint: '/v1/chat/completions', completion_window: '24h', pad: '' });
      const padded = body.replace('"pad":""', `"pad":"${' '.repeat(10_000 - body.length)}"`);
      expect(padded.length).toBe(10_000);
      expect((await call('POST', '/v1/batches', { body: padded, headers: { 'content-type': 'application/json' } })).status).toBe(200);
    });
  });

  describe('completion_window', () => {
    let fileId: string;
    beforeAll(async () => {
      fileId = (await uploadFile('w.jsonl')).body.id;
    });
    const create = (completion_window: string) =>
      call('POST', '/v1/batches', { json: { input_file_id: fileId, endpoint: '/v1/chat/completions', completion_window } });

    it('accepts <N>h, and <N>m / <N>s under an hour, and answers what it accepted', async () => {
      for (const window of ['24h', '1h', '336h', '59m', '5s', '3599s']) {
        const created = await create(window);
        expect(created.status, window).toBe(200);
        expect(created.body.completion_window).toBe(window);
      }
    });

    it('refuses every other spelling, and creates nothing', async () => {
      const before = (await call('GET', '/v1/batches?limit=100')).body.data.length;
      for (const window of [
        ' 24h',
        '24h\n',
        '86400s',
        '1440m',
        '60m',
        '3600s',
        '00024h',
        '024h',
        '+24h',
        '-1h',
        '2.4e1h',
        '1e2h',
        '24',
        'h',
        '0h',
        '24H',
        '1d',
        '',
      ]) {
        const refused = await create(window);
        expect(refused.status, JSON.stringify(window)).toBe(400);
        expect(refused.body.error.param).toBe('completion_window');
      }
      // Well spelled, but outside MIN_COMPLETION_WINDOW..MAX_COMPLETION_WINDOW.
      expect((await create('337h')).status).toBe(400);
      expect((await create('4s')).status).toBe(400);
      expect((await call('GET', '/v1/batches?limit=100')).body.data.length).toBe(before);
    });
  });

  describe('filenames', () => {
    it('keeps a raw UTF-8 filename as sent, and downloads it with an RFC 6266 Content-Disposition', async () => {
      for (const filename of [
        '评测数据.jsonl',
        'naïve – ünïcödé.jsonl',
        'emoji-🎉.jsonl',
        'spaces and (brackets) [1].jsonl',
        'plain.jsonl',
      ]) {
        const file = await uploadFile(filename);
        expect(file.status, filename).toBe(200);
        expect(file.body.filename).toBe(filename);
        expect((await call('GET', `/v1/files/${file.body.id}`)).body.filename).toBe(filename);
        const download = await call('GET', `/v1/files/${file.body.id}/content`);
        expect(download.status).toBe(200);
        expect(download.text).toBe(LINE);
        const disposition = download.headers.get('content-disposition')!;
        expect(disposition).toMatch(/^attachment; filename=/);
        // Every client reads one of the two forms: the ASCII fallback, or filename* (RFC 5987).
        const extended = /filename\*=UTF-8''([^;]+)/.exec(disposition)?.[1];
        if (extended) expect(decodeURIComponent(extended)).toBe(filename);
        else expect(disposition).toContain(filename.replace(/(["\\])/g, '\\$1'));
        expect(/^[\x20-\x7e]*$/.test(disposition)).toBe(true);
      }
    });

    it('refuses control characters and line separators in filenames at upload, on /v1/files and the Uploads API', async () => {
      const before = await stored();
      for (const filename of ['a\u0001b.jsonl', 'a\u007fb.jsonl', 'a\u0085b.jsonl', 'a\u2028b.jsonl', 'a\u2029b.jsonl', 'tab\t.jsonl']) {
        // The filename as RFC 5987 sends it, which busboy decodes to exactly these characters.
        const body = [
          '--zz',
          'Content-Disposition: form-data; name="purpose"',
          '',
          'batch',
          '--zz',
          `Content-Disposition: form-data; name="file"; filename*=UTF-8''${encodeURIComponent(filename)}`,
          '',
          LINE,
          '--zz--',
          '',
        ].join('\r\n');
        const files = await call('POST', '/v1/files', { body, headers: { 'content-type': 'multipart/form-data; boundary=zz' } });
        expect(files.status, JSON.stringify(filename)).toBe(400);
        expect(files.body.error).toMatchObject({ param: 'file', code: 'invalid_filename' });

        const uploads = await call('POST', '/v1/uploads', {
          json: { filename, purpose: 'batch', bytes: 10, mime_type: 'application/jsonl' },
        });
        expect(uploads.status, JSON.stringify(filename)).toBe(400);
        expect(uploads.body.error).toMatchObject({ param: 'filename', code: 'invalid_filename' });
      }
      const lone = await call('POST', '/v1/uploads', { json: { filename: 'a\ud800.jsonl', purpose: 'batch', bytes: 10, mime_type: 'x' } });
      expect(lone.body.error).toMatchObject({ param: 'filename', code: 'invalid_filename' });
      expect(await stored()).toEqual(before);
    });
  });

  describe('multipart bodies that end early', () => {
    const head = (field: string) =>
      [
        '--zz',
        'Content-Disposition: form-data; name="purpose"',
        '',
        'batch',
        '--zz',
        `Content-Disposition: form-data; name="${field}"; filename="a.jsonl"`,
        '',
        '',
      ].join('\r\n');
    let uploadId: string;
    beforeAll(async () => {
      uploadId = (await call('POST', '/v1/uploads', { json: { filename: 'a.jsonl', purpose: 'batch', bytes: 1000, mime_type: 'x' } })).body
        .id;
    });
    const routes = () => [
      ['/v1/files', 'file'],
      [`/v1/uploads/${uploadId}/parts`, 'data'],
    ];

    it('answers 400 invalid_multipart for a body cut anywhere, and stores nothing', async () => {
      const before = await stored();
      for (const [route, field] of routes()) {
        const full = `${head(field!)}${LINE}\r\n--zz--\r\n`;
        // Every cut of the body: in the fields, in the file's headers, in its bytes, before the closing boundary.
        for (let cut = 1; cut < full.length - 2; cut += 7) {
          const answer = await call('POST', route!, {
            body: full.slice(0, cut),
            headers: { 'content-type': 'multipart/form-data; boundary=zz' },
          });
          expect(answer.status, `${route} cut at ${cut}`).toBe(400);
          expect(answer.body.error.code, `${route} cut at ${cut}`).toBe('invalid_multipart');
        }
      }
      expect(await stored()).toEqual(before);
      await healthy();
    });

    it('answers a body whose stream breaks off (the client went away) without storing anything', async () => {
      const before = await stored();
      for (const [route, field] of routes()) {
        let sent = false;
        const breaking = new ReadableStream<Uint8Array>({
          pull(controller) {
            if (!sent) {
              sent = true;
              controller.enqueue(new TextEncoder().encode(`${head(field!)}{"custom_id":`));
            } else controller.error(new Error('socket hang up'));
          },
        });
        const answer = await app.request(route!, {
          method: 'POST',
          headers: { authorization: 'Bearer alice-key', 'content-type': 'multipart/form-data; boundary=zz' },
          body: breaking,
          duplex: 'half',
        } as RequestInit);
        expect(answer.status).toBe(400);
        expect(((await answer.json()) as any).error.code).toBe('invalid_multipart');
      }
      expect(await stored()).toEqual(before);
      await healthy();
    });
  });
});
