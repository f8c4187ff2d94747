import { describe, expect, it } from 'vitest';
import { type JsonlLine, type JsonlReadOptions, readJsonlLines } from '../../../shared/input/jsonl.js';

async function* chunked(data: Buffer, sizes: number | (() => number)): AsyncGenerator<Uint8Array> {
  let i = 0;
  while (i < data.length) {
    const size = Math.max(1, typeof sizes === 'number' ? sizes : sizes());
    yield data.subarray(i, i + size);
    i += size;
  }
}

async function read(data: Buffer | string, sizes: number | (() => number) = 1 << 16, options?: JsonlReadOptions) {
  const lines: JsonlLine[] = [];
  const buf = typeof data === 'string' ? Buffer.from(data) : data;
  for await (const line of readJsonlLines(chunked(buf, sizes), options)) lines.push(line);
  return lines;
}

function simplify(lines: JsonlLine[]) {
  return lines.map((l) => ({ number: l.number, start: l.start, end: l.end, text: l.bytes.toString('utf8'), tooLong: l.tooLong }));
}

/** A small deterministic PRNG, so random chunkings are reproducible. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function expectTiles(lines: JsonlLine[], from: number, to: number) {
  let at = from;
  for (const line of lines) {
    expect(line.start).toBe(at);
    expect(line.end).toBeGreaterThan(line.start);
    at = line.end;
  }
  expect(at).toBe(to);
}

describe('readJsonlLines', () => {
  const sample = '{"a":1}\n{"b":"ünïcödé ✓"}\r\n\n   \n{"c":[1,2,3]}\r\n{"last":true}';

  it('splits lines with absolute offsets that tile the file', async () => {
    const lines = await read(sample);
    expect(simplify(lines)).toEqual([
      { number: 1, start: 0, end: 8, text: '{"a":1}', tooLong: false },
      { number: 2, start: 8, end: 33, text: '{"b":"ünïcödé ✓"}', tooLong: false },
      { number: 3, start: 33, end: 34, text: '', tooLong: false },
      { number: 4, start: 34, end: 38, text: '   ', tooLong: false },
      { number: 5, start: 38, end: 53, text: '{"c":[1,2,3]}', tooLong: false },
      { number: 6, start: 53, end: 66, text: '{"last":true}', tooLong: false },
    ]);
    expectTiles(lines, 0, Buffer.byteLength(sample));
  });

  it('gives the same lines whatever the chunk boundaries (1-byte and random chunks)', async () => {
    const parts: string[] = [];
    const random = rng(42);
    for (let i = 0; i < 300; i++) {
      const len = i === 0 ? 0 : Math.floor(random() * 200);
      const body = 'x'.repeat(len) + (i % 7 === 3 ? 'é€' : '');
      parts.push(`{"i":${i},"s":"${body}"}${i % 5 === 0 ? '\r\n' : '\n'}${i % 11 === 0 ? '\n  \n' : ''}`);
    }
    const text = `\uFEFF${parts.join('')}{"tail":1}`;
    const data = Buffer.from(text);
    const expected = simplify(await read(data, data.length));
    expect(expected[0]!.text).toBe('{"i":0,"s":""}');
    expect(expected.at(-1)!.text).toBe('{"tail":1}');
    expectTiles(await read(data, data.length), 0, data.length);

    expect(simplify(await read(data, 1))).toEqual(expected);
    expect(simplify(await read(data, 2))).toEqual(expected);
    expect(simplify(await read(data, 3))).toEqual(expected);
    for (let seed = 1; seed <= 20; seed++) {
      const r = rng(seed);
      const max = [4, 17, 100, 1000, 5000][seed % 5]!;
      expect(simplify(await read(data, () => Math.floor(r() * max) + 1))).toEqual(expected);
    }
  });

  it('handles CRLF endings', async () => {
    const lines = await read('{"a":1}\r\n{"b":2}\r\n', 1);
    expect(simplify(lines)).toEqual([
      { number: 1, start: 0, end: 9, text: '{"a":1}', tooLong: false },
      { number: 2, start: 9, end: 18, text: '{"b":2}', tooLong: false },
    ]);
  });

  it('keeps a lone \\r that is not part of a line terminator', async () => {
    const lines = await read('a\rb\n', 1);
    expect(lines.map((l) => l.bytes.toString())).toEqual(['a\rb']);
  });

  it('strips a UTF-8 BOM at offset 0 only', async () => {
    const data = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"a":1}\n{"b":2}\n')]);
    for (const size of [1, 2, 3, 4, 100]) {
      const lines = await read(data, size);
      expect(simplify(lines)).toEqual([
        { number: 1, start: 0, end: 11, text: '{"a":1}', tooLong: false },
        { number: 2, start: 11, end: 19, text: '{"b":2}', tooLong: false },
      ]);
    }
    // A range read starting later in the file keeps its bytes as they are.
    const later = await read(data.subarray(3), 100, { offset: 3 });
    expect(later[0]!.start).toBe(3);
    expect(later[0]!.bytes.toString()).toBe('{"a":1}');
    const bomLater = await read(Buffer.from('\uFEFFx\n'), 100, { offset: 10 });
    expect(bomLater[0]!.bytes.toString()).toBe('\uFEFFx');
  });

  it('a BOM-only file gives one empty line', async () => {
    const lines = await read(Buffer.from([0xef, 0xbb, 0xbf]), 1);
    expect(simplify(lines)).toEqual([{ number: 1, start: 0, end: 3, text: '', tooLong: false }]);
  });

  it('yields a last line without a newline', async () => {
    const lines = await read('{"a":1}\n{"b":2}', 3);
    expect(lines.map((l) => [l.bytes.toString(), l.start, l.end])).toEqual([
      ['{"a":1}', 0, 8],
      ['{"b":2}', 8, 15],
    ]);
  });

  it('yields nothing for an empty source, and one empty line for a lone newline', async () => {
    expect(await read('')).toEqual([]);
    expect(simplify(await read('\n'))).toEqual([{ number: 1, start: 0, end: 1, text: '', tooLong: false }]);
  });

  it('marks a too-long line without keeping its bytes, and continues after it', async () => {
    const long = 'y'.repeat(50);
    const text = `{"a":1}\n${long}\r\n{"b":2}\n${long}`;
    for (const size of [1, 7, 1000]) {
      const lines = await read(text, size, { maxLineBytes: 20 });
      expect(simplify(lines)).toEqual([
        { number: 1, start: 0, end: 8, text: '{"a":1}', tooLong: false },
        { number: 2, start: 8, end: 60, text: '', tooLong: true },
        { number: 3, start: 60, end: 68, text: '{"b":2}', tooLong: false },
        { number: 4, start: 68, end: 118, text: '', tooLong: true },
      ]);
    }
  });

  it('measures maxLineBytes on the content, without the terminator or the BOM', async () => {
    const exact = 'z'.repeat(10);
    for (const size of [1, 3, 100]) {
      const lines = await read(`\uFEFF${exact}\r\n${exact}\r\n${exact}z\n${exact}`, size, { maxLineBytes: 10 });
      expect(lines.map((l) => l.tooLong)).toEqual([false, false, true, false]);
      expect(lines[0]!.bytes.toString()).toBe(exact);
    }
  });

  it('honours offset and firstLineNumber for a range read', async () => {
    const lines = await read('{"c":3}\n{"d":4}\n', 2, { offset: 100, firstLineNumber: 7 });
    expect(simplify(lines)).toEqual([
      { number: 7, start: 100, end: 108, text: '{"c":3}', tooLong: false },
      { number: 8, start: 108, end: 116, text: '{"d":4}', tooLong: false },
    ]);
  });

  it('accepts plain Uint8Array chunks', async () => {
    async function* src() {
      yield new Uint8Array(Buffer.from('{"a"'));
      yield new Uint8Array(Buffer.from(':1}\n'));
    }
    const lines: JsonlLine[] = [];
    for await (const l of readJsonlLines(src())) lines.push(l);
    expect(lines.map((l) => l.bytes.toString())).toEqual(['{"a":1}']);
  });
  it('matches a naive splitter on random inputs, chunkings and limits', async () => {
    const naive = (data: Buffer, max: number) => {
      const out: ReturnType<typeof simplify> = [];
      let start = 0;
      let number = 1;
      while (start < data.length) {
        const nl = data.indexOf(10, start);
        const end = nl === -1 ? data.length : nl + 1;
        let content = data.subarray(start, nl === -1 ? end : nl);
        if (nl !== -1 && content.at(-1) === 13) content = content.subarray(0, -1);
        if (start === 0 && content[0] === 0xef && content[1] === 0xbb && content[2] === 0xbf) content = content.subarray(3);
        const tooLong = content.length > max;
        out.push({ number, start, end, text: tooLong ? '' : content.toString('utf8'), tooLong });
        start = end;
        number++;
      }
      return out;
    };
    const alphabet = [0x61, 0x62, 10, 13, 0x20, 0xef, 0xbb, 0xbf];
    for (let seed = 1; seed <= 200; seed++) {
      const r = rng(seed);
      const len = Math.floor(r() * 120);
      const data = Buffer.alloc(len);
      for (let i = 0; i < len; i++) data[i] = alphabet[Math.floor(r() * (r() < 0.5 ? 3 : alphabet.length))]!;
      if (seed % 3 === 0 && len >= 3) data.set([0xef, 0xbb, 0xbf], 0);
      const max = Math.floor(r() * 12);
      const maxChunk = Math.floor(r() * 20) + 1;
      const got = simplify(await read(data, () => Math.floor(r() * maxChunk) + 1, { maxLineBytes: max }));
      expect(got, `seed ${seed}`).toEqual(naive(data, max));
    }
  });
});
