// The request-line model: blank lines, endpoints, decoding and parsing one line, and quoting values in messages.
import { describe, expect, it } from 'vitest';
import {
  acceptedUrls,
  cutToBytes,
  decodeLine,
  isBlankLine,
  normalizeEndpoint,
  parseRequestLine,
  QUOTE_BYTES,
  quote,
} from '../../../shared/input/request-line.js';
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

describe('acceptedUrls', () => {
  it('takes the endpoint and, for a /v1 path, its /v4 alias, whichever of them the batch names', () => {
    expect(acceptedUrls('/v1/chat/completions')).toEqual(['/v1/chat/completions', '/v4/chat/completions']);
    expect(acceptedUrls('/v4/chat/completions')).toEqual(['/v1/chat/completions', '/v4/chat/completions']);
    expect(acceptedUrls('/compatible-mode/v1/embeddings')).toEqual(['/compatible-mode/v1/embeddings']);
  });
});

/** A lone surrogate: half of a character. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

describe('quoting values in messages', () => {
  it('keeps short values whole and cuts ASCII at 77 characters and "..."', () => {
    expect(quote('gpt-4o-mini')).toBe('"gpt-4o-mini"');
    expect(quote(42)).toBe('42');
    expect(quote(undefined)).toBe('undefined');
    const long = quote('x'.repeat(200));
    expect(long).toBe(`"${'x'.repeat(76)}...`);
    expect(long).toHaveLength(80);
  });

  it('cuts long CJK model names within QUOTE_BYTES of UTF-8, by whole characters', () => {
    const model = '通义千问超大规模语言模型'.repeat(20);
    const quoted = quote(model);
    expect(Buffer.byteLength(quoted)).toBeLessThanOrEqual(QUOTE_BYTES);
    expect(quoted.endsWith('...')).toBe(true);
    expect(JSON.stringify(model).startsWith(quoted.slice(0, -3))).toBe(true);
    // As many characters as fit: one more would pass the budget.
    const kept = quoted.slice(0, -3);
    const next = JSON.stringify(model).slice(kept.length, kept.length + 1);
    expect(Buffer.byteLength(kept + next) + 3).toBeGreaterThan(QUOTE_BYTES);
    expect(quoted).not.toContain('\uFFFD');
  });

  it('never splits an emoji, wherever the cut falls', () => {
    for (let lead = 0; lead < 8; lead++) {
      const text = `${'a'.repeat(lead)}${'😀'.repeat(40)}`;
      for (const maxBytes of [10, 11, 12, 13, 80]) {
        const cut = cutToBytes(text, maxBytes);
        expect(Buffer.byteLength(cut), `${lead} ${maxBytes}`).toBeLessThanOrEqual(maxBytes);
        expect(LONE_SURROGATE.test(cut), `${lead} ${maxBytes}`).toBe(false);
        expect(text.startsWith(cut.slice(0, -3))).toBe(true);
        // The cut is at the last whole character that fits with the "...".
        const kept = cut.slice(0, -3);
        const next = String.fromCodePoint(text.codePointAt(kept.length)!);
        expect(Buffer.byteLength(kept + next) + 3).toBeGreaterThan(maxBytes);
      }
    }
    expect(cutToBytes('😀😀', 8)).toBe('😀😀');
    expect(cutToBytes('😀😀😀', 8)).toBe('😀...');
    expect(cutToBytes('😀😀😀', 6)).toBe('...');
  });
});

describe('decodeLine', () => {
  it('tells bytes that are not UTF-8, not JSON, or JSON of another kind from an object', () => {
    expect(decodeLine(Buffer.from('{"a":1,"a":2}'))).toEqual({ ok: true, value: { a: 2 } });
    expect(decodeLine(Buffer.from([0x7b, 0xff, 0x7d]))).toEqual({ ok: false, problem: 'utf8' });
    expect(decodeLine(Buffer.from('{"a":'))).toEqual({ ok: false, problem: 'json' });
    expect(decodeLine(Buffer.from('[1]'))).toEqual({ ok: false, problem: 'not_object', kind: 'an array' });
  });
});
