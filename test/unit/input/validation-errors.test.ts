// The error list of a file that fails validation: all errors counted, the first maxErrors kept,
// and the batch record's share bounded by bytes.
import { describe, expect, it } from 'vitest';
import type { BatchLineError } from '../../../shared/batch/model.js';
import { errorsWithin, moreErrorsNotice, RECORD_ERRORS_BYTES } from '../../../shared/input/validation-errors.js';
import { codes, request, validate } from './validation-support.js';

const jsonBytes = (errors: BatchLineError[]) => Buffer.byteLength(JSON.stringify(errors));

function failed(result: Awaited<ReturnType<typeof validate>>) {
  if (result.ok) throw new Error('expected the file to be invalid');
  return result;
}

/** A file whose first line sets a long CJK model name and whose next `count` lines each name another one. */
function cjkMismatches(count: number): string {
  const first = '通义千问超大规模语言模型'.repeat(12);
  const lines = [request('first', {}, { model: first })];
  for (let i = 0; i < count; i++) lines.push(request(`r${i}`, {}, { model: `深度求索推理模型第${i}版`.repeat(10) }));
  return lines.join('\n');
}

describe('the error list', () => {
  it('caps the errors at maxErrors but keeps counting lines', async () => {
    const text = Array.from({ length: 50 }, (_, i) => (i % 2 === 0 ? 'oops' : request(`r${i}`))).join('\n');
    const result = await validate(text, { maxErrors: 5 });
    expect(result.total).toBe(50);
    expect(codes(result)).toEqual([1, 3, 5, 7, 9].map((line) => [line, 'invalid_json_line', null]));
  });

  it('counts every error, kept or not', async () => {
    const text = Array.from({ length: 50 }, (_, i) => (i % 2 === 0 ? 'oops' : request(`r${i}`))).join('\n');
    const result = failed(await validate(text, { maxErrors: 5 }));
    expect(result).toMatchObject({ errorCount: 25, errorCountIsExact: true });
    expect(result.reportedErrors).toEqual(result.errors);
  });

  it('bounds the errors a batch record holds by bytes: 1,000 mismatches of long CJK model names', async () => {
    const result = failed(await validate(cjkMismatches(1_000), { maxErrors: 1_000, maxRequests: 10_000 }));
    expect(result.errorCount).toBe(1_000);
    expect(result.reportedErrors).toHaveLength(1_000);
    expect(result.reportedErrors.map((e) => e.line)).toEqual(Array.from({ length: 1_000 }, (_, i) => i + 2));
    // The record takes the first errors, as many as fit: one more would not.
    const recorded = result.errors;
    expect(recorded.length).toBeGreaterThan(50);
    expect(recorded.length).toBeLessThan(1_000);
    expect(recorded).toEqual(result.reportedErrors.slice(0, recorded.length));
    expect(jsonBytes(recorded)).toBeLessThanOrEqual(RECORD_ERRORS_BYTES);
    expect(jsonBytes(result.reportedErrors.slice(0, recorded.length + 1))).toBeGreaterThan(RECORD_ERRORS_BYTES);
    // Each message quotes two model names, each cut to 80 bytes by whole characters.
    for (const error of result.reportedErrors) {
      expect(error.code).toBe('model_mismatch');
      expect(Buffer.byteLength(error.message)).toBeLessThan(260);
      expect(error.message).not.toContain('\uFFFD');
    }
  });

  it('keeps the record within a smaller budget, and every error when they fit', async () => {
    const result = failed(await validate(cjkMismatches(20), { maxErrorBytes: 1_000 }));
    expect(jsonBytes(result.errors)).toBeLessThanOrEqual(1_000);
    expect(result.errors.length).toBeGreaterThan(0);
    expect(result.reportedErrors).toHaveLength(20);
    const roomy = failed(await validate(cjkMismatches(20)));
    expect(roomy.errors).toEqual(roomy.reportedErrors);
  });

  it('counts a duplicate on a line with another problem once, as the duplicate', async () => {
    const text = [request('a'), request('a', { method: 'GET' }), request('b'), 'oops', request('b')].join('\n');
    const result = failed(await validate(text));
    expect(codes(result)).toEqual([
      [2, 'duplicate_custom_id', 'custom_id'],
      [4, 'invalid_json_line', null],
      [5, 'duplicate_custom_id', 'custom_id'],
    ]);
    expect(result).toMatchObject({ errorCount: 3, errorCountIsExact: true });
  });

  it('says the count is a lower bound when duplicates beyond maxErrors were not looked for', async () => {
    // 20,000 suspects are confirmed per re-read; once maxErrors are confirmed, later ones are not read.
    const text = Array.from({ length: 20_010 }, () => request('same')).join('\n');
    const result = failed(await validate(text, { maxErrors: 5, maxRequests: 100_000 }, 1 << 16));
    expect(result.reportedErrors).toHaveLength(5);
    expect(result.errorCountIsExact).toBe(false);
    expect(result.errorCount).toBeGreaterThanOrEqual(5);
    expect(result.errorCount).toBeLessThan(20_009);
  });
});

describe('errorsWithin', () => {
  const error = (line: number): BatchLineError => ({ code: 'invalid_json_line', message: `Line ${line}: x`, param: null, line });

  it('takes the longest run from the first whose JSON array fits', () => {
    const errors = [1, 2, 3, 4].map(error);
    const two = jsonBytes(errors.slice(0, 2));
    expect(errorsWithin(errors, two)).toEqual(errors.slice(0, 2));
    expect(errorsWithin(errors, two - 1)).toEqual(errors.slice(0, 1));
    expect(errorsWithin(errors, 10)).toEqual([]);
    expect(errorsWithin(errors, 1_000_000)).toEqual(errors);
  });
});

describe('moreErrorsNotice', () => {
  it('tells how many errors there are and where the rest are', () => {
    expect(moreErrorsNotice(212, { count: 5_000, exact: true }, { id: 'file-abc', errors: 1_000 })).toEqual({
      code: 'too_many_errors',
      message: 'The file has 5,000 errors: the first 212 are listed here; the first 1,000 are in the error file file-abc (error_file_id).',
      param: null,
      line: null,
    });
    expect(moreErrorsNotice(212, { count: 1_000, exact: true }, { id: 'file-abc', errors: 1_000 }).message).toBe(
      'The file has 1,000 errors: the first 212 are listed here; all 1,000 are in the error file file-abc (error_file_id).',
    );
    expect(moreErrorsNotice(5, { count: 7_000, exact: false }).message).toBe(
      'The file has at least 7,000 errors: the first 5 are listed here.',
    );
  });
});
