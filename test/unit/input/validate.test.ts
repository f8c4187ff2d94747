// validateBatchInput: which lines a file may hold, and the error each bad line gets (its first
// problem, with its line number, code and param). Chunk planning, duplicates and the bounds on the
// error list have their own files beside this one.
import { describe, expect, it } from 'vitest';
import { codes, ENDPOINT, errorsOf, request, validate } from './validation-support.js';

describe('validateBatchInput: good files', () => {
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

  it('accepts /v4 urls and a /v4 endpoint', async () => {
    const v4 = [request('a', { url: '/v4/chat/completions' }), request('b')].join('\n');
    expect((await validate(v4)).ok).toBe(true);
    expect((await validate(v4, { endpoint: '/v4/chat/completions' })).ok).toBe(true);
    const wrong = await validate(request('a', { url: '/v4/embeddings' }), { endpoint: '/v4/chat/completions' });
    expect(codes(wrong)).toEqual([[1, 'url_mismatch', 'url']]);
  });
});

describe('validateBatchInput: the error of each bad line', () => {
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

  it('takes the model from the first valid line', async () => {
    const text = [request('a', { url: '/nope' }, { model: 'other' }), request('b'), request('c', {}, { model: 'other' })].join('\n');
    const result = await validate(text);
    expect(codes(result)).toEqual([
      [1, 'url_mismatch', 'url'],
      [3, 'model_mismatch', 'body.model'],
    ]);
    expect(errorsOf(result)[1]!.message).toBe('Line 3: model "other" differs from "gpt-4o-mini" on line 2; a batch uses one model.');
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
      const errors = [{ code: 'empty_file', message: 'The input file has no requests.', param: null, line: null }];
      expect(result).toEqual({ ok: false, total: 0, errors, reportedErrors: errors, errorCount: 1, errorCountIsExact: true });
    }
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
});
