// The request-line model: blank lines, endpoints, decoding and parsing one line, and quoting values in messages.
import { describe, expect, it } from 'vitest';
import { isBlankLine, normalizeEndpoint, parseRequestLine } from '../../../shared/input/request-line.js';
import { ENDPOINT, request } from './validation-support.js';

describe('normalizeEndpoint', () => {
  it('maps /v4 paths to /v1 and leaves others alone', () => {
    expect(normalizeEndpoint('/v4/chat/completions')).toBe('/v1/chat/completions');
    expect(normalizeEndpoint('/v1/embeddings')).toBe('/v1/embeddings');
    expect(normalizeEndpoint('/v4')).toBe('/v4');
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
