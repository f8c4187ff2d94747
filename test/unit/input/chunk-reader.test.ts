// The worker's chunk reader: a planned chunk's requests, read by byte range through the
// request-line model, with /v4 urls normalized; a range that does not hold its planned requests is refused.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FsBlobStore } from '../../../shared/adapters/local/fs-blob-store.js';
import { readChunkRequests } from '../../../shared/input/chunk-reader.js';
import { ENDPOINT, request, validate } from './validation-support.js';

describe('readChunkRequests', () => {
  let dir: string;
  let blobs: FsBlobStore;

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'chunk-reader-'));
    blobs = new FsBlobStore(dir);
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads every planned request once, in order, with /v4 urls as /v1', async () => {
    const lines = Array.from({ length: 30 }, (_, i) =>
      request(`r${i}`, i % 4 === 0 ? { url: '/v4/chat/completions' } : {}, { filler: 'x'.repeat(i * 7) }),
    );
    const text = `\uFEFF${lines.map((line, i) => `${line}${i % 5 === 0 ? '\r\n \n' : '\n'}`).join('')}`;
    const result = await validate(text, { chunkMaxRequests: 7 });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    await blobs.put('input', text);
    const read = [];
    for (const chunk of result.chunks) read.push(...(await readChunkRequests(blobs, 'input', chunk)));
    expect(read.map((r) => r.customId)).toEqual(lines.map((_, i) => `r${i}`));
    expect(new Set(read.map((r) => r.url))).toEqual(new Set([ENDPOINT]));
    expect(read[3]!.body).toEqual({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello r3' }], filler: 'x'.repeat(21) });
  });

  it('refuses a range that does not hold the planned number of requests', async () => {
    const text = `${request('a')}\n${request('b')}\n`;
    await blobs.put('input', text);
    const chunk = { index: 0, start: 0, end: Buffer.byteLength(text), requests: 3 };
    await expect(readChunkRequests(blobs, 'input', chunk)).rejects.toThrow('chunk 0: expected 3 requests');
    await expect(readChunkRequests(blobs, 'input', { ...chunk, start: 1, requests: 2 })).rejects.toThrow('is not a valid request');
  });
});
