import { describe, expect, it } from 'vitest';
import { readJsonlLines } from '../../../shared/input/jsonl.js';
import {
  isBlankLine,
  normalizeEndpoint,
  parseRequestLine,
  type ValidationOptions,
  type ValidationResult,
  validateBatchInput,
} from '../../../shared/input/validate.js';

const ENDPOINT = '/v1/chat/completions';

const OPTIONS: ValidationOptions = {
  endpoint: ENDPOINT,
  maxRequests: 1000,
  maxLineBytes: 10_000,
  maxErrors: 100,
  chunkMaxRequests: 100,
  chunkMaxBytes: 1_000_000,
};

function request(id: string, extra: Record<string, unknown> = {}, body: Record<string, unknown> = {}): string {
  return JSON.stringify({
    custom_id: id,
    method: 'POST',
    url: ENDPOINT,
    body: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: `hello ${id}` }], ...body },
    ...extra,
  });
}

async function* chunks(data: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

function validate(text: string | Buffer, options: Partial<ValidationOptions> = {}, chunkSize = 4096) {
  const data = typeof text === 'string' ? Buffer.from(text) : text;
  return validateBatchInput(chunks(data, chunkSize), { ...OPTIONS, reread: () => chunks(data, chunkSize), ...options });
}

function errorsOf(result: ValidationResult) {
  if (result.ok) throw new Error('expected the file to be invalid');
  return result.errors;
}

function codes(result: ValidationResult) {
  return errorsOf(result).map((e) => [e.line, e.code, e.param]);
}

describe('normalizeEndpoint', () => {
  it('maps /v4 paths to /v1 and leaves others alone', () => {
    expect(normalizeEndpoint('/v4/chat/completions')).toBe('/v1/chat/completions');
    expect(normalizeEndpoint('/v1/embeddings')).toBe('/v1/embeddings');
    expect(normalizeEndpoint('/v4')).toBe('/v4');
  });
});

describe('validateBatchInput', () => {
  it('accepts a good file and plans one chunk', async () => {
    const text = `${[request('a'), request('b'), request('c')].join('\n')}\n`;
    const result = await validate(text);
    expect(result).toEqual({
      ok: true,
      model: 'gpt-4o-mini',
      total: 3,
      chunks: [{ index: 0, start: 0, end: Buffer.byteLength(text), requests: 3 }],
    });
  });

  it('tolerates blank lines, CRLF, a BOM and no trailing newline, in any chunking', async () => {
    const text = `\uFEFF${request('a')}\r\n\r\n   \n${request('b')}\r\n\t\n${request('c')}`;
    for (const size of [1, 3, 64, 100_000]) {
      const result = await validate(text, {}, size);
      expect(result.ok).toBe(true);
      if (!result.ok) return;
      expect(result.total).toBe(3);
      expect(result.chunks).toEqual([{ index: 0, start: 0, end: Buffer.byteLength(text), requests: 3 }]);
    }
  });

  it('reports each error code with its line number and param', async () => {
    const lines = [
      request('ok-1'), // 1
      'not json', // 2
      '[1,2]', // 3
      JSON.stringify({ method: 'POST', url: ENDPOINT, body: { model: 'gpt-4o-mini' } }), // 4
      request('', {}), // 5
      JSON.stringify({ custom_id: 42, method: 'POST', url: ENDPOINT, body: { model: 'gpt-4o-mini' } }), // 6
      request('ok-1'), // 7: duplicate of line 1
      request('m1', { method: 'GET' }), // 8
      JSON.stringify({ custom_id: 'm2', url: ENDPOINT, body: { model: 'gpt-4o-mini' } }), // 9: no method
      JSON.stringify({ custom_id: 'u1', method: 'POST', body: { model: 'gpt-4o-mini' } }), // 10
      request('u2', { url: '/v1/embeddings' }), // 11
      JSON.stringify({ custom_id: 'b1', method: 'POST', url: ENDPOINT }), // 12
      request('b2', { body: 'hello' }), // 13
      request('md1', {}, { model: undefined }), // 14
      request('md2', {}, { model: '' }), // 15
      request('md3', {}, { model: 'gpt-4o' }), // 16
      request('s1', {}, { stream: true }), // 17
      `{"custom_id":"big","x":"${'z'.repeat(300)}"}`, // 18
      request('ok-2', {}, { stream: false }), // 19
      request('ok-3', { url: '/v4/chat/completions' }), // 20
    ];
    const result = await validate(lines.join('\n'), { maxLineBytes: 250 });
    expect(result.total).toBe(20);
    expect(codes(result)).toEqual([
      [2, 'invalid_json_line', null],
      [3, 'invalid_json_line', null],
      [4, 'missing_custom_id', 'custom_id'],
      [5, 'invalid_custom_id', 'custom_id'],
      [6, 'invalid_custom_id', 'custom_id'],
      [7, 'duplicate_custom_id', 'custom_id'],
      [8, 'invalid_method', 'method'],
      [9, 'invalid_method', 'method'],
      [10, 'missing_url', 'url'],
      [11, 'url_mismatch', 'url'],
      [12, 'missing_body', 'body'],
      [13, 'missing_body', 'body'],
      [14, 'missing_model', 'body.model'],
      [15, 'missing_model', 'body.model'],
      [16, 'model_mismatch', 'body.model'],
      [17, 'stream_not_supported', 'body.stream'],
      [18, 'line_too_large', null],
    ]);
    const messages = errorsOf(result).map((e) => e.message);
    expect(messages[0]).toBe('Line 2: the line is not parseable as valid JSON.');
    expect(messages[1]).toBe('Line 3: the line must be a JSON object, got an array.');
    expect(messages[5]).toBe('Line 7: custom_id "ok-1" is also used on line 1.');
    expect(messages[6]).toBe('Line 8: method must be "POST", got "GET".');
    expect(messages[9]).toBe('Line 11: url "/v1/embeddings" does not match the batch endpoint "/v1/chat/completions".');
    expect(messages[12]).toBe('Line 14: body.model is missing.');
    expect(messages[14]).toBe('Line 16: model "gpt-4o" differs from "gpt-4o-mini" on line 1; a batch uses one model.');
    expect(messages[16]).toBe('Line 18: the line is longer than the limit of 250 bytes.');
  });

  it('reports invalid UTF-8 as invalid_json_line', async () => {
    const bad = Buffer.concat([Buffer.from('{"custom_id":"a'), Buffer.from([0xff, 0xfe]), Buffer.from('"}\n')]);
    const text = Buffer.concat([Buffer.from(`${request('x')}\n`), bad]);
    const result = await validate(text);
    expect(codes(result)).toEqual([[2, 'invalid_json_line', null]]);
    expect(errorsOf(result)[0]!.message).toBe('Line 2: the line is not valid UTF-8.');
  });

  it('reports non-object JSON values', async () => {
    const result = await validate(['null', '"s"', '12', 'true', request('a')].join('\n'));
    expect(codes(result)).toEqual([
      [1, 'invalid_json_line', null],
      [2, 'invalid_json_line', null],
      [3, 'invalid_json_line', null],
      [4, 'invalid_json_line', null],
    ]);
    expect(errorsOf(result)[0]!.message).toBe('Line 1: the line must be a JSON object, got null.');
  });

  it('accepts /v4 urls and a /v4 endpoint', async () => {
    const v4 = [request('a', { url: '/v4/chat/completions' }), request('b')].join('\n');
    expect((await validate(v4)).ok).toBe(true);
    expect((await validate(v4, { endpoint: '/v4/chat/completions' })).ok).toBe(true);
    const wrong = await validate(request('a', { url: '/v4/embeddings' }), { endpoint: '/v4/chat/completions' });
    expect(codes(wrong)).toEqual([[1, 'url_mismatch', 'url']]);
  });

  it('takes the model from the first valid line', async () => {
    const text = [request('a', { url: '/nope' }, { model: 'other' }), request('b'), request('c', {}, { model: 'other' })].join('\n');
    const result = await validate(text);
    expect(codes(result)).toEqual([
      [1, 'url_mismatch', 'url'],
      [3, 'model_mismatch', 'body.model'],
    ]);
    expect(errorsOf(result)[1]!.message).toBe('Line 3: model "other" differs from "gpt-4o-mini" on line 2; a batch uses one model.');
  });

  it('reports every duplicate with the line of the first use', async () => {
    const text = [request('a'), request('b'), request('a'), '', request('b'), request('a')].join('\n');
    const result = await validate(text);
    expect(errorsOf(result).map((e) => e.message)).toEqual([
      'Line 3: custom_id "a" is also used on line 1.',
      'Line 5: custom_id "b" is also used on line 2.',
      'Line 6: custom_id "a" is also used on line 1.',
    ]);
  });

  it('caps the errors at maxErrors but keeps counting lines', async () => {
    const text = Array.from({ length: 50 }, (_, i) => (i % 2 === 0 ? 'oops' : request(`r${i}`))).join('\n');
    const result = await validate(text, { maxErrors: 5 });
    expect(result.total).toBe(50);
    expect(codes(result)).toEqual([1, 3, 5, 7, 9].map((line) => [line, 'invalid_json_line', null]));
  });

  it('reports too_many_tasks once, at the first line over the limit, and keeps validating', async () => {
    const lines = Array.from({ length: 6 }, (_, i) => request(`r${i}`));
    lines.splice(1, 0, '   ');
    lines.push('broken');
    const result = await validate(lines.join('\n'), { maxRequests: 4 });
    expect(result.total).toBe(7);
    expect(codes(result)).toEqual([
      [6, 'too_many_tasks', null],
      [8, 'invalid_json_line', null],
    ]);
    expect(errorsOf(result)[0]!.message).toBe('Line 6: the file has more than 4 requests, the most a batch takes.');
    expect((await validate(lines.slice(0, 5).join('\n'), { maxRequests: 4 })).ok).toBe(true);
  });

  it('reports empty_file for an empty or whitespace-only file', async () => {
    for (const text of ['', '\n', '  \n\t\r\n\n', '\uFEFF', '\uFEFF\n \n']) {
      const result = await validate(text);
      expect(result).toEqual({
        ok: false,
        total: 0,
        errors: [{ code: 'empty_file', message: 'The input file has no requests.', param: null, line: null }],
      });
    }
  });

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
});

describe('validateBatchInput at scale', () => {
  it('never reports a false duplicate when custom_id hashes collide, and finds the real ones exactly', async () => {
    // A 2-bit hash: nearly every line is a suspect, and only re-reading tells them apart.
    const lines = Array.from({ length: 300 }, (_, i) => request(`r${i}`));
    const clean = await validate(lines.join('\n'), { weakHashForTests: true });
    expect(clean.ok).toBe(true);
    expect(clean.ok && clean.chunks.reduce((n, c) => n + c.requests, 0)).toBe(300);

    const withDuplicates = [...lines];
    withDuplicates[120] = request('r7');
    withDuplicates[250] = request('r7', { method: 'GET' }); // a duplicate is reported before other problems
    withDuplicates[299] = request('r298');
    const result = await validate(withDuplicates.join('\n'), { weakHashForTests: true });
    expect(codes(result)).toEqual([
      [121, 'duplicate_custom_id', 'custom_id'],
      [251, 'duplicate_custom_id', 'custom_id'],
      [300, 'duplicate_custom_id', 'custom_id'],
    ]);
    expect(errorsOf(result).map((e) => e.message)).toEqual([
      'Line 121: custom_id "r7" is also used on line 8.',
      'Line 251: custom_id "r7" is also used on line 8.',
      'Line 300: custom_id "r298" is also used on line 299.',
    ]);
  });

  it('confirms suspects in several re-reads and keeps the errors in line order', async () => {
    const lines = Array.from({ length: 41_000 }, (_, i) => request(`r${i}`));
    lines[40_500] = request('r3');
    lines.splice(10, 0, 'broken');
    const result = await validate(lines.join('\n'), { weakHashForTests: true, maxRequests: 100_000 }, 1 << 16);
    expect(codes(result)).toEqual([
      [11, 'invalid_json_line', null],
      [40_502, 'duplicate_custom_id', 'custom_id'],
    ]);
  });

  it('needs reread only when hashes repeat', async () => {
    const data = Buffer.from([request('a'), request('b')].join('\n'));
    expect((await validateBatchInput(chunks(data, 100), { ...OPTIONS })).ok).toBe(true);
    const twice = Buffer.from([request('a'), request('a')].join('\n'));
    await expect(validateBatchInput(chunks(twice, 100), { ...OPTIONS })).rejects.toThrow(/reread/);
  });

  it('refuses JSON nested too deeply and numbers that would change on the way upstream', async () => {
    const deep = (n: number) =>
      `{"custom_id":"d${n}","method":"POST","url":"${ENDPOINT}","body":{"model":"gpt-4o-mini","x":${'['.repeat(n)}${']'.repeat(n)}}}`;
    const text = [
      deep(254), // 256 levels with the line and the body: allowed
      deep(255),
      deep(100_000),
      request('n1', {}, { seed: 18446744073709551615 }),
      request('n2', {}, { temperature: 1e-3, max_tokens: 4096 }),
      `{"custom_id":"n3","method":"POST","url":"${ENDPOINT}","body":{"model":"gpt-4o-mini","x":1e999}}`,
      `{"custom_id":"n4","method":"POST","url":"${ENDPOINT}","body":{"model":"gpt-4o-mini","x":12345678901234567890}}`,
      `{"custom_id":"n5","method":"POST","url":"${ENDPOINT}","body":{"model":"gpt-4o-mini","x":123456789012345.678}}`,
    ].join('\n');
    const result = await validate(text, { maxLineBytes: 1_000_000 });
    expect(codes(result)).toEqual([
      [2, 'json_too_deep', null],
      [3, 'json_too_deep', null],
      [4, 'number_out_of_range', null],
      [6, 'number_out_of_range', null],
      [7, 'number_out_of_range', null],
    ]);
    expect(errorsOf(result)[2]!.message).toMatch(/^Line 4: the number 18446744073709552000 cannot be sent exactly/);
    expect(errorsOf(result)[3]!.message).toMatch(/^Line 6: the number 1e999 cannot be sent exactly/);
  });

  it('tells a model with a lone surrogate from U+FFFD', async () => {
    const text = [
      `{"custom_id":"a","method":"POST","url":"${ENDPOINT}","body":{"model":"m\\ud800"}}`,
      `{"custom_id":"b","method":"POST","url":"${ENDPOINT}","body":{"model":"m\u{fffd}"}}`,
    ].join('\n');
    expect(codes(await validate(text))).toEqual([[2, 'model_mismatch', 'body.model']]);
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

describe('parseRequestLine', () => {
  it('parses a request line', () => {
    const parsed = parseRequestLine(Buffer.from(request('x')));
    expect(parsed).toEqual({
      ok: true,
      request: {
        custom_id: 'x',
        method: 'POST',
        url: ENDPOINT,
        body: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello x' }] },
      },
    });
  });

  it('refuses lines that are not requests', () => {
    expect(parseRequestLine(Buffer.from('nope')).ok).toBe(false);
    expect(parseRequestLine(Buffer.from('[]')).ok).toBe(false);
    expect(parseRequestLine(Buffer.from('{"custom_id":"a","url":"/v1/x"}')).ok).toBe(false);
    expect(parseRequestLine(Buffer.from([0x7b, 0xff, 0x7d])).ok).toBe(false);
  });
});

describe('isBlankLine', () => {
  it('treats empty and whitespace-only lines as blank', () => {
    expect(isBlankLine(Buffer.from(''))).toBe(true);
    expect(isBlankLine(Buffer.from(' \t\r'))).toBe(true);
    expect(isBlankLine(Buffer.from(' {}'))).toBe(false);
    expect(isBlankLine(Buffer.from('{}'))).toBe(false);
  });
});
