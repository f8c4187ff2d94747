// The checks of a file sent in parts, from the parts' summaries: for any split of any file, they
// answer exactly what BatchFileCheck answers for the whole file in one push.
import { describe, expect, it } from 'vitest';
import { PartScan } from '../../../shared/input/part-summary.js';
import { BatchFileCheck, checkJoinedParts, type UploadCheckLimits } from '../../../shared/input/upload-check.js';
import { CORPUS } from '../../fixtures/bad/generate.js';

/** A small deterministic PRNG, so random splits are reproducible. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function whole(data: Buffer, limits: UploadCheckLimits) {
  const check = new BatchFileCheck(limits);
  return check.push(data) ?? check.end();
}

/** Cuts `data` into non-empty parts at `cuts`, scans each in pieces of `piece` bytes, and checks the joined summaries. */
async function joined(data: Buffer, cuts: number[], limits: UploadCheckLimits, piece = 1 << 16) {
  const bounds = [0, ...new Set(cuts.filter((cut) => cut > 0 && cut < data.length))].sort((a, b) => a - b);
  bounds.push(data.length);
  const parts = [];
  for (let i = 0; i + 1 < bounds.length; i++) {
    const bytes = data.subarray(bounds[i], bounds[i + 1]);
    if (bytes.length === 0) continue;
    const scan = new PartScan(limits);
    for (let at = 0; at < bytes.length; at += piece) scan.push(bytes.subarray(at, at + piece));
    parts.push({ bytes: bytes.length, summary: scan.end() });
  }
  const reads: Array<[number, number]> = [];
  const { problem, model } = await checkJoinedParts(parts, limits, (start, end) => {
    reads.push([start, end]);
    return (async function* () {
      for (let at = start; at < end; at += 7) yield data.subarray(at, Math.min(end, at + 7));
    })();
  });
  return { problem, model, parts, reads };
}

function randomCuts(random: () => number, length: number): number[] {
  const count = Math.floor(random() * 6);
  return Array.from({ length: count }, () => Math.floor(random() * (length + 1)));
}

const CORPUS_CHECK_LIMITS: UploadCheckLimits = { maxLineBytes: 4096, maxRequests: 100 };

describe('checks from part summaries', () => {
  it('answers as the whole-file check for random splits of every corpus file', async () => {
    const random = rng(7);
    for (const [name, content] of Object.entries(CORPUS)) {
      const data = Buffer.from(content);
      const expected = whole(data, CORPUS_CHECK_LIMITS);
      const splits = [[], ...Array.from({ length: 40 }, () => randomCuts(random, data.length))];
      // Also every cut next to the start, where a BOM and the first bytes are.
      for (let cut = 1; cut <= Math.min(6, data.length - 1); cut++) splits.push([cut], [1, cut + 1]);
      for (const cuts of splits) {
        const piece = 1 + Math.floor(random() * 50);
        expect((await joined(data, cuts, CORPUS_CHECK_LIMITS, piece)).problem, `${name} cut at ${cuts.join(',')}`).toEqual(expected);
      }
    }
  });

  it('reads the model of the first request as the whole-file check does, wherever the parts are cut', async () => {
    const lines = ['', '{"custom_id":"a","body":{"model":"first-model"}}', '{"custom_id":"b","body":{"model":"other"}}'];
    const data = Buffer.from(`${lines.join('\n')}\n`);
    const check = new BatchFileCheck(CORPUS_CHECK_LIMITS);
    check.push(data);
    check.end();
    expect(check.firstModel).toBe('first-model');
    for (let cut = 1; cut < data.length; cut += 5) expect((await joined(data, [cut], CORPUS_CHECK_LIMITS)).model).toBe('first-model');
    // No model (or no string one) is recorded as none.
    expect((await joined(Buffer.from('{"body":{"model":7}}\n'), [3], CORPUS_CHECK_LIMITS)).model).toBeUndefined();
  });

  it('answers as the whole-file check for random small files, split anywhere', async () => {
    const random = rng(42);
    const alphabet = [0x7b, 0x7d, 0x22, 0x61, 0x31, 0x5b, 0x5d, 0x3a, 0x20, 0x09, 0x0d, 0x0a, 0x0a, 0x0a, 0xef, 0xbb, 0xbf, 0xc3, 0xa9];
    const snippets = ['{"a":1}', '{}', '[]', '\r\n', '\n', ' \n', '\uFEFF', '\uFEFF{"b":2}\n', '{"long":"xxxxxxxx"}', 'x'];
    const limits: UploadCheckLimits = { maxLineBytes: 9, maxRequests: 4 };
    for (let n = 0; n < 3_000; n++) {
      const pieces: Buffer[] = [];
      const count = Math.floor(random() * 12);
      for (let i = 0; i < count; i++) {
        if (random() < 0.5) pieces.push(Buffer.from(snippets[Math.floor(random() * snippets.length)]!));
        else pieces.push(Buffer.from([alphabet[Math.floor(random() * alphabet.length)]!]));
      }
      if (random() < 0.03) pieces.splice(Math.floor(random() * (pieces.length + 1)), 0, Buffer.from([0]));
      const data = Buffer.concat(pieces);
      const cuts = Array.from({ length: Math.floor(random() * data.length) }, () => Math.floor(random() * (data.length + 1)));
      const piece = 1 + Math.floor(random() * 4);
      expect((await joined(data, cuts, limits, piece)).problem, `${JSON.stringify(data.toString('latin1'))} cut at ${cuts}`).toEqual(
        whole(data, limits),
      );
    }
  });

  const limits: UploadCheckLimits = { maxLineBytes: 20, maxRequests: 5 };
  const line = (id: number) => `{"id":${id}}`;

  it('joins a line that spans three or more parts, and numbers over-long lines in the file', async () => {
    const data = Buffer.from(`${line(1)}\n\n{"spans":"${'x'.repeat(30)}"}\n${line(2)}\n`);
    const cuts = [12, 16, 20, 24, 28];
    const { problem, parts } = await joined(data, cuts, limits);
    expect(parts.length).toBe(6);
    expect(problem).toEqual({
      status: 413,
      code: 'line_too_large',
      message: 'Line 3 is longer than the 20 bytes a request line may have (MAX_LINE_BYTES).',
    });
    expect(problem).toEqual(whole(data, limits));
  });

  it('names ten over-long lines across parts and counts the rest', async () => {
    const long = `{"x":"${'y'.repeat(20)}"}`;
    const data = Buffer.from(Array.from({ length: 14 }, (_, i) => (i % 2 ? long : line(i))).join('\n'));
    const { problem } = await joined(data, [40, 41, 100, 250], { maxLineBytes: 20, maxRequests: 100 });
    expect(problem?.message).toBe('Lines 2, 4, 6, 8, 10, 12, 14 are longer than the 20 bytes a request line may have (MAX_LINE_BYTES).');
    const many = Buffer.from(Array.from({ length: 30 }, () => long).join('\r\n'));
    expect((await joined(many, [5, 300, 301, 600], limits)).problem?.message).toBe(
      'Lines 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 20 more are longer than the 20 bytes a request line may have (MAX_LINE_BYTES).',
    );
  });

  it('drops a BOM split across parts, and refuses half a BOM', async () => {
    const data = Buffer.from(`\uFEFF${'{"a":"0123456"}'}\n${line(2)}\n`); // line 1 is 15 bytes with its BOM
    expect(await joined(data, [1, 2], { maxLineBytes: 15, maxRequests: 5 })).toMatchObject({ problem: undefined });
    expect((await joined(data, [1, 2], { maxLineBytes: 14, maxRequests: 5 })).problem?.code).toBe('line_too_large');
    const blank = Buffer.from('\uFEFF \n\n');
    expect((await joined(blank, [1, 2, 3], limits)).problem?.code).toBe('empty_file');
    const half = Buffer.from([0xef, 0xbb, ...Buffer.from(`${line(1)}\n`)]);
    const refused = (await joined(half, [1, 2], limits)).problem;
    expect(refused).toEqual(whole(half, limits));
    expect(refused?.message).toContain('byte 0 is 0xef');
  });

  it('drops the CR of a CRLF split across parts', async () => {
    const exact = `{"x":"${'y'.repeat(12)}"}`; // 20 bytes: the limit
    const data = Buffer.from(`${exact}\r\n${exact}\r\n`);
    for (const cut of [20, 21, 42, 43]) expect(await joined(data, [cut], limits)).toMatchObject({ problem: undefined });
    const over = Buffer.from(`${exact}x\r\n${line(2)}\r\n`);
    expect((await joined(over, [21, 22], limits)).problem?.message).toBe(
      'Line 1 is longer than the 20 bytes a request line may have (MAX_LINE_BYTES).',
    );
  });

  it('skips blank lines at the parts’ edges and counts requests across parts', async () => {
    const data = Buffer.from(`\n \n${line(1)}\n\n \t\r\n${line(2)}\n \n${line(3)}\n${line(4)}\n${line(5)}\n${line(6)}\n\n`);
    const cuts = [1, 2, 3, 12, 13, 14, 16, 17];
    const { problem, reads } = await joined(data, cuts, limits);
    expect(problem).toEqual(whole(data, limits));
    expect(problem?.message).toBe(
      'The file has 6 requests; a batch takes at most 5 (MAX_REQUESTS_PER_BATCH). Split it into several files.',
    );
    // Only the first request line was read, from the start of line 3.
    expect(reads).toEqual([[3, 3 + line(1).length + 1]]);
  });

  it('tells a NUL in a later part by its offset in the file', async () => {
    const data = Buffer.concat([Buffer.from(`${line(1)}\n${line(2)}\n`), Buffer.from('{"nul":"\u0000"}\n')]);
    const { problem, reads } = await joined(data, [5, 20, 30], limits);
    expect(problem?.message).toContain(`NUL byte at offset ${data.indexOf(0)}`);
    expect(problem).toEqual(whole(data, limits));
    expect(reads).toEqual([]);
  });

  it('checks the first request even when it spans parts and is not JSON', async () => {
    const data = Buffer.from(`\r\n  {"a":1,}\n${line(2)}\n`);
    const { problem } = await joined(data, [3, 5, 7, 9, 11], limits);
    expect(problem?.message).toBe('The file is not JSONL: line 2, its first request, is not valid JSON.');
  });

  it('reads an over-long first line only up to its first byte that is not whitespace', async () => {
    const data = Buffer.from(`   [${'1,'.repeat(40)}1]\n`);
    const { problem, parts } = await joined(data, [2, 50], limits);
    expect(problem).toEqual(whole(data, limits));
    expect(problem?.message).toContain("byte 3 is '['");
    expect(parts).toHaveLength(3);
  });

  it('summarizes a part the same however it streams in, in a few numbers', () => {
    const data = Buffer.from(`tail of a line\n${line(1)}\n\n${'z'.repeat(40)}\r\n${line(2)}\r\nhead of a`);
    const scan = (piece: number) => {
      const s = new PartScan(limits);
      for (let at = 0; at < data.length; at += piece) s.push(data.subarray(at, at + piece));
      return s.end();
    };
    const summary = scan(data.length);
    for (const piece of [1, 2, 3, 5, 13]) expect(scan(piece)).toEqual(summary);
    expect(summary).toEqual({
      maxLineBytes: 20,
      nul: -1,
      newlines: 5,
      lead: [0x74, 0x61, 0x69],
      head: { bytes: 14, lastNonBlank: 13, endsWithCR: false },
      tail: { bytes: 9, lastNonBlank: 8, endsWithCR: false },
      requests: 3,
      firstRequest: { line: 1, start: 15, end: 24, tooLong: false },
      longLines: [3],
      longLineCount: 1,
    });
  });
});
