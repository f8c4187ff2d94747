// The pure rules behind the extension routes: which error lines a retry picks, and what a batch cost.
import { describe, expect, it } from 'vitest';
import { routeEntry } from '../../../infra/config.js';
import { matchesSelection, RETRIABLE } from '../../../shared/batch/retry.js';
import { batchCost } from '../../../shared/batch/usage.js';
import { parseRoutes, RoutesError, routePrices } from '../../../shared/upstream/routes.js';

describe('retry selection', () => {
  const status = (code: number) => ({ custom_id: 'a', response: { status_code: code }, error: null });
  const code = (name: string) => ({ custom_id: 'a', response: null, error: { code: name } });

  it('picks 408, 409, 429, 5xx, batch_expired and batch_cancelled by default', () => {
    for (const s of [408, 409, 429, 500, 503, 599]) expect(matchesSelection(status(s), RETRIABLE)).toBe(true);
    for (const s of [400, 401, 404, 422]) expect(matchesSelection(status(s), RETRIABLE)).toBe(false);
    expect(matchesSelection(code('batch_expired'), RETRIABLE)).toBe(true);
    expect(matchesSelection(code('batch_cancelled'), RETRIABLE)).toBe(true);
    expect(matchesSelection(code('response_too_large'), RETRIABLE)).toBe(false);
  });

  it('picks by chosen codes or statuses only', () => {
    const selection = { codes: ['chunk_failed'], statuses: [400, '4xx' as const] };
    expect(matchesSelection(status(404), selection)).toBe(true);
    expect(matchesSelection(status(503), selection)).toBe(false);
    expect(matchesSelection(code('chunk_failed'), selection)).toBe(true);
    expect(matchesSelection(code('batch_expired'), selection)).toBe(false);
  });
});

describe('usage cost', () => {
  const usage = { inputTokens: 1_000_000, cachedTokens: 200_000, outputTokens: 500_000, reasoningTokens: 0, totalTokens: 1_500_000 };

  it('multiplies tokens by the route price per million, cached input at its own price', () => {
    const prices = routePrices(
      parseRoutes({
        'gpt-*': { baseUrl: 'https://x.test/v1', inputPricePerMillion: 2, cachedInputPricePerMillion: 0.5, outputPricePerMillion: 8 },
      }),
    );
    expect(batchCost({ usage }, prices('gpt-4o'))).toEqual({ currency: 'USD', input: 1.6, cachedInput: 0.1, output: 4, total: 5.7 });
    expect(prices('llama')).toBeUndefined();
    expect(batchCost({ usage }, undefined)).toBeNull();
  });

  it('refuses prices that are not non-negative numbers', () => {
    expect(() => parseRoutes({ m: { baseUrl: 'https://x.test/v1', inputPricePerMillion: -1 } })).toThrow(RoutesError);
    expect(() => parseRoutes({ m: { baseUrl: 'https://x.test/v1', currency: 'dollars' } })).toThrow(RoutesError);
  });

  it('carries the prices of a deployed route into UPSTREAM_CONFIG', () => {
    const entry = routeEntry(
      { baseUrl: 'https://x.test/v1/', inputPricePerMillion: 1, outputPricePerMillion: 4, currency: 'EUR' },
      'secret',
    );
    expect(routePrices(parseRoutes({ m: entry }))('m')).toEqual({
      inputPerMillion: 1,
      cachedInputPerMillion: 1,
      outputPerMillion: 4,
      currency: 'EUR',
    });
  });
});
