// receiveMultipart alone: a store that fails mid-file ends the request with the store's error at
// once (the rest of the body is not read, and nothing waits for it), a body that breaks off fails
// with invalid_multipart, and raw UTF-8 filenames arrive as sent.
import type { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ApiError } from '../../../shared/api/errors.js';
import { receiveMultipart } from '../../../shared/api/multipart.js';

const CONTENT_TYPE = 'multipart/form-data; boundary=zz';
const encoder = new TextEncoder();

function fileHead(field: string, filenameHeader = 'filename="a.jsonl"') {
  return `--zz\r\nContent-Disposition: form-data; name="${field}"; ${filenameHeader}\r\n\r\n`;
}

/** A request whose body is `head`, then `chunks` pieces of 1 KiB (counted as they are pulled), then the closing boundary. */
function request(head: string, chunks: number) {
  const state = { pulled: 0 };
  let sentHead = false;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (!sentHead) {
        sentHead = true;
        controller.enqueue(encoder.encode(head));
      } else if (state.pulled < chunks) {
        state.pulled++;
        controller.enqueue(new Uint8Array(1024).fill(0x61));
      } else {
        controller.enqueue(encoder.encode('\r\n--zz--\r\n'));
        controller.close();
      }
    },
  });
  return {
    state,
    request: new Request('http://x/', { method: 'POST', headers: { 'content-type': CONTENT_TYPE }, body, duplex: 'half' } as RequestInit),
  };
}

async function consume(body: Readable): Promise<{ bytes: number }> {
  let bytes = 0;
  for await (const chunk of body) bytes += (chunk as Buffer).length;
  return { bytes };
}

describe('receiveMultipart', () => {
  it('answers with the store error as soon as the store fails, without reading the rest of the body', async () => {
    const { state, request: req } = request(fileHead('file'), 10_000);
    const storeError = new Error('disk full');
    const failing = async (body: Readable) => {
      for await (const _ of body) throw storeError;
      return { bytes: 0 };
    };
    await expect(receiveMultipart(req, { fileField: 'file', maxFileBytes: 1e9, store: failing })).rejects.toBe(storeError);
    expect(state.pulled).toBeLessThan(1_000);
  });

  it('fails with invalid_multipart when the body breaks off inside the file, and the store sees the error', async () => {
    let sent = false;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        // Once the parser has seen the file's headers: the client goes away in the middle of the file.
        if (sent) return void setTimeout(() => controller.error(new Error('aborted')), 50);
        sent = true;
        controller.enqueue(encoder.encode(`${fileHead('file')}{"a":`));
      },
    });
    const req = new Request('http://x/', {
      method: 'POST',
      headers: { 'content-type': CONTENT_TYPE },
      body,
      duplex: 'half',
    } as RequestInit);
    let storeFailed: unknown;
    const store = (stream: Readable) =>
      consume(stream).catch((error: unknown) => {
        storeFailed = error;
        throw error;
      });
    const refused = await receiveMultipart(req, { fileField: 'file', maxFileBytes: 1e9, store }).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(ApiError);
    expect((refused as ApiError).code).toBe('invalid_multipart');
    expect(storeFailed).toBeInstanceOf(Error);
  });

  it('hands the store an error that came before it started reading', async () => {
    const req = new Request('http://x/', {
      method: 'POST',
      headers: { 'content-type': CONTENT_TYPE },
      body: `${fileHead('file')}{"a":1}`,
    });
    let storeFailed = false;
    // A store that starts reading late (after a mkdir, say): the error must still reach it.
    const late = async (stream: Readable) => {
      await new Promise((resolve) => setTimeout(resolve, 50));
      return consume(stream).catch((error: unknown) => {
        storeFailed = true;
        throw error;
      });
    };
    await expect(receiveMultipart(req, { fileField: 'file', maxFileBytes: 1e9, store: late })).rejects.toMatchObject({
      code: 'invalid_multipart',
    });
    expect(storeFailed).toBe(true);
  });

  it('reads a raw UTF-8 filename as UTF-8, and an RFC 5987 one too', async () => {
    for (const header of ['filename="评测数据.jsonl"', "filename*=UTF-8''%E8%AF%84%E6%B5%8B%E6%95%B0%E6%8D%AE.jsonl"]) {
      const { request: req } = request(fileHead('file', header), 1);
      const form = await receiveMultipart(req, { fileField: 'file', maxFileBytes: 1e9, store: consume });
      expect(form.file).toEqual({ filename: '评测数据.jsonl', bytes: 1024, truncated: false });
    }
  });

  it('keeps fields of any name as data', async () => {
    const body = ['constructor', '__proto__', 'toString']
      .map((name) => `--zz\r\nContent-Disposition: form-data; name="${name}"\r\n\r\nv-${name}\r\n`)
      .join('');
    const req = new Request('http://x/', { method: 'POST', headers: { 'content-type': CONTENT_TYPE }, body: `${body}--zz--\r\n` });
    const form = await receiveMultipart(req, { fileField: 'file', maxFileBytes: 1e9, store: consume });
    expect(Object.entries(form.fields)).toEqual([
      ['constructor', 'v-constructor'],
      ['__proto__', 'v-__proto__'],
      ['toString', 'v-toString'],
    ]);
  });
});
