// The error list of a file that fails validation: all errors counted, the first maxErrors kept,
// and the batch record's share bounded by bytes.
import { describe, expect, it } from 'vitest';
import { codes, request, validate } from './validation-support.js';

describe('the error list', () => {
  it('caps the errors at maxErrors but keeps counting lines', async () => {
    const text = Array.from({ length: 50 }, (_, i) => (i % 2 === 0 ? 'oops' : request(`r${i}`))).join('\n');
    const result = await validate(text, { maxErrors: 5 });
    expect(result.total).toBe(50);
    expect(codes(result)).toEqual([1, 3, 5, 7, 9].map((line) => [line, 'invalid_json_line', null]));
  });
});
