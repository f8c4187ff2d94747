// The chunk plan of a valid file: consecutive byte ranges within the request and byte limits,
// covering every request once, at most maxChunks of them.
import { describe, expect, it } from 'vitest';
import { readJsonlLines } from '../../../shared/input/jsonl.js';
import { isBlankLine, parseRequestLine } from '../../../shared/input/request-line.js';
import { chunks, ENDPOINT, request, validate } from './validation-support.js';

describe('chunk planning', () => {
  it('plans chunks by request count with exact ranges', async () => {
    const lines = Array.from({ length: 7 }, (_, i) => `${request(`r${i}`)}\n`);
    const offsets = [0];
    for (const l of lines) offsets.push(offsets.at(-1)! + Buffer.byteLength(l));
    const result = await validate(lines.join(''), { chunkMaxRequests: 3 });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.chunks).toEqual([
      { index: 0, start: offsets[0], end: offsets[3], requests: 3 },
      { index: 1, start: offsets[3], end: offsets[6], requests: 3 },
      { index: 2, start: offsets[6], end: offsets[7], requests: 1 },
    ]);
  });

  it('plans chunks by bytes, with an oversized line alone in its chunk', async () => {
    const small = (id: string) => `${request(id)}\n`;
    const big = `${request('big', {}, { filler: 'q'.repeat(500) })}\n`;
    const lines = [small('a'), small('b'), small('c'), big, small('d'), small('e')];
    const len = lines.map((l) => Buffer.byteLength(l));
    const at = (i: number) => len.slice(0, i).reduce((a, b) => a + b, 0);
    const limit = len[0]! + len[1]! + 5; // two small lines fit, three do not
    expect(len[3]!).toBeGreaterThan(limit);
    const result = await validate(lines.join(''), { chunkMaxBytes: limit });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.chunks).toEqual([
      { index: 0, start: 0, end: at(2), requests: 2 },
      { index: 1, start: at(2), end: at(3), requests: 1 },
      { index: 2, start: at(3), end: at(4), requests: 1 },
      { index: 3, start: at(4), end: at(6), requests: 2 },
    ]);
  });

  it('a line of exactly chunkMaxBytes fills a chunk', async () => {
    const line = `${request('a')}\n`;
    const n = Buffer.byteLength(line);
    const result = await validate(`${line + request('b')}\n`, { chunkMaxBytes: n });
    expect(result.ok && result.chunks.map((c) => [c.start, c.end, c.requests])).toEqual([
      [0, n, 1],
      [n, 2 * n, 1],
    ]);
  });

  it('plans chunks that cover every request once and re-read to exactly the request lines', async () => {
    const parts: string[] = [];
    const ids: string[] = [];
    for (let i = 0; i < 500; i++) {
      const id = `req-${i}`;
      ids.push(id);
      parts.push(request(id, {}, { filler: 'f'.repeat((i * 37) % 300) }) + (i % 9 === 0 ? '\r\n' : '\n'));
      if (i % 13 === 0) parts.push('\n  \n');
    }
    const data = Buffer.from(`\uFEFF${parts.join('')}`);
    const result = await validate(data, { chunkMaxRequests: 40, chunkMaxBytes: 9000 }, 1000);
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.total).toBe(500);
    expect(result.chunks.reduce((n, c) => n + c.requests, 0)).toBe(500);

    const seen: string[] = [];
    let previousEnd = 0;
    for (const [i, chunk] of result.chunks.entries()) {
      expect(chunk.index).toBe(i);
      expect(chunk.start).toBeGreaterThanOrEqual(previousEnd);
      expect(chunk.requests).toBeLessThanOrEqual(40);
      expect(chunk.end - chunk.start).toBeLessThanOrEqual(9000);
      previousEnd = chunk.end;
      // What a worker does: read the byte range and parse its non-blank lines.
      let count = 0;
      const slice = data.subarray(chunk.start, chunk.end);
      for await (const line of readJsonlLines(chunks(slice, 777), { offset: chunk.start })) {
        expect(line.tooLong).toBe(false);
        if (isBlankLine(line.bytes)) continue;
        const parsed = parseRequestLine(line.bytes);
        expect(parsed.ok).toBe(true);
        if (!parsed.ok) return;
        expect(parsed.request.url).toBe(ENDPOINT);
        expect(parsed.request.body.model).toBe('gpt-4o-mini');
        seen.push(parsed.request.custom_id);
        count++;
      }
      expect(count).toBe(chunk.requests);
    }
    expect(seen).toEqual(ids);
    // Nothing but blank lines lies outside the chunks.
    const covered = result.chunks.map((c) => [c.start, c.end] as const);
    let outside = '';
    let at = 0;
    for (const [s, e] of covered) {
      outside += data.subarray(at, s).toString();
      at = e;
    }
    outside += data.subarray(at).toString();
    expect(outside.trim()).toBe('');
  });

  it('merges chunks so that a plan never exceeds maxChunks', async () => {
    const lines = Array.from({ length: 100 }, (_, i) => `${request(`r${i}`)}\n`);
    const result = await validate(lines.join(''), { chunkMaxRequests: 10, maxChunks: 4 });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.chunks.map((c) => c.requests)).toEqual([30, 30, 30, 10]);
    expect(result.chunks.map((c) => c.index)).toEqual([0, 1, 2, 3]);
    expect(result.chunks[0]!.start).toBe(0);
    expect(result.chunks.at(-1)!.end).toBe(Buffer.byteLength(lines.join('')));
    for (let i = 1; i < result.chunks.length; i++) expect(result.chunks[i]!.start).toBe(result.chunks[i - 1]!.end);
  });
});
