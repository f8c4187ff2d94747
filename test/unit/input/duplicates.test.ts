// Duplicate custom_ids: every repeat is reported with the line of the first use, exactly, even
// when the custom_id hashes collide (a 2-bit test hash makes nearly every line a suspect).
import { describe, expect, it } from 'vitest';
import { validateBatchInput } from '../../../shared/input/validate.js';
import { chunks, codes, errorsOf, OPTIONS, request, validate } from './validation-support.js';

describe('duplicate custom_ids', () => {
  it('reports every duplicate with the line of the first use', async () => {
    const text = [request('a'), request('b'), request('a'), '', request('b'), request('a')].join('\n');
    const result = await validate(text);
    expect(errorsOf(result).map((e) => e.message)).toEqual([
      'Line 3: custom_id "a" is also used on line 1.',
      'Line 5: custom_id "b" is also used on line 2.',
      'Line 6: custom_id "a" is also used on line 1.',
    ]);
  });

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
});
