// The routes file: what it accepts, how it explains what it refuses, which route serves a model,
// and that the keys it names are resolved at start-up.
import { describe, expect, it } from 'vitest';
import { systemClock } from '../../../shared/adapters/local/system-clock.js';
import { ConfigError, loadConfig } from '../../../shared/config.js';
import { createUpstreamRouter } from '../../../shared/upstream/router.js';
import { globMatcher, parseRoutes, parseRoutesText, RoutesError, resolveRoutes, routeSelector } from '../../../shared/upstream/routes.js';
import { TEST_MODEL } from '../../../shared/upstream/test-model.js';

const openai = {
  baseUrl: 'https://api.openai.com/v1/',
  apiKeySecret: 'env:OPENAI_KEY',
  maxConcurrency: 50,
  requestsPerMinute: 500,
  tokensPerMinute: 200_000,
};

describe('routes file', () => {
  it('parses model names and patterns, trimming the base URL', () => {
    const routes = parseRoutes({ 'gpt-4o*': openai, 'llama-3.1-8b': { baseUrl: 'http://vllm:8000/v1', apiKey: 'local' } });
    expect(routes).toEqual([
      { pattern: 'gpt-4o*', ...openai, baseUrl: 'https://api.openai.com/v1' },
      { pattern: 'llama-3.1-8b', baseUrl: 'http://vllm:8000/v1', apiKey: 'local' },
    ]);
  });

  it('names every problem with its route and field', () => {
    const attempt = () =>
      parseRoutesText(
        JSON.stringify({
          'gpt-4o*': { ...openai, maxConcurrency: 0 },
          bad: { baseUrl: 'ftp://x', apiKey: 'a', apiKeySecret: 'env:B' },
          typo: { baseUrl: 'http://x/v1', maxConcurency: 3 },
        }),
        'routes.json',
      );
    expect(attempt).toThrow(RoutesError);
    const message = (() => {
      try {
        attempt();
      } catch (error) {
        return (error as Error).message;
      }
    })();
    expect(message).toMatch(/^routes\.json: /);
    expect(message).toContain('"gpt-4o*"."maxConcurrency"');
    expect(message).toContain('"bad"."baseUrl": must be an http(s) URL');
    expect(message).toContain('give apiKey or apiKeySecret, not both');
    expect(message).toMatch(/"typo".*maxConcurency/);
  });

  it('refuses text that is not JSON, and an empty mapping', () => {
    expect(() => parseRoutesText('{"a": ', 'r.json')).toThrow(/r\.json: not valid JSON/);
    expect(() => parseRoutes({}, 'r.json')).toThrow(/maps no model/);
    expect(() => parseRoutes([], 'r.json')).toThrow(RoutesError);
  });

  it('is read by loadConfig from UPSTREAM_ROUTES, and a bad file stops start-up with a ConfigError', () => {
    const files: Record<string, string> = {
      '/ok.json': JSON.stringify({ 'm*': { baseUrl: 'http://u/v1' } }),
      '/bad.json': '{"m": {"baseUrl": 3}}',
    };
    const read = (path: string) => {
      if (!(path in files)) throw Object.assign(new Error('nope'), { code: 'ENOENT' });
      return files[path]!;
    };
    expect(loadConfig({ UPSTREAM_ROUTES: '/ok.json' }, read).upstream.routes).toEqual([{ pattern: 'm*', baseUrl: 'http://u/v1' }]);
    expect(loadConfig({}, read).upstream.routes).toEqual([]);
    expect(() => loadConfig({ UPSTREAM_ROUTES: '/bad.json' }, read)).toThrow(ConfigError);
    expect(() => loadConfig({ UPSTREAM_ROUTES: '/bad.json' }, read)).toThrow(/UPSTREAM_ROUTES \(\/bad\.json\): "m"\."baseUrl"/);
    expect(() => loadConfig({ UPSTREAM_ROUTES: '/missing.json' }, read)).toThrow(/cannot read \/missing\.json \(ENOENT\)/);
  });
});

describe('route selection', () => {
  it('matches globs with * across slashes and ? for one character', () => {
    expect(globMatcher('gpt-4o*')('gpt-4o-mini')).toBe(true);
    expect(globMatcher('gpt-4o*')('gpt-4')).toBe(false);
    expect(globMatcher('meta-llama/*')('meta-llama/Llama-3.1-8B')).toBe(true);
    expect(globMatcher('qwen?-max')('qwen3-max')).toBe(true);
    expect(globMatcher('a.b')('axb')).toBe(false);
  });

  it('prefers an exact name, then the first pattern in file order', () => {
    const select = routeSelector([{ pattern: 'gpt-*' }, { pattern: 'gpt-4o*' }, { pattern: 'gpt-4o-mini' }]);
    expect(select('gpt-4o-mini')?.pattern).toBe('gpt-4o-mini');
    expect(select('gpt-4o')?.pattern).toBe('gpt-*');
    expect(select('claude')).toBeUndefined();
  });

  it('resolves env:NAME keys, and names what it cannot resolve', async () => {
    const routes = parseRoutes({ a: openai, b: { baseUrl: 'http://b/v1', apiKeySecret: 'prod/openai' }, c: { baseUrl: 'http://c/v1' } });
    await expect(resolveRoutes(routes, { env: {}, defaultConcurrency: 8 })).rejects.toThrow(
      /"a"\.apiKeySecret: the environment variable OPENAI_KEY is not set; "b"\.apiKeySecret: the secret "prod\/openai" could not be resolved here/,
    );
    const resolved = await resolveRoutes(routes, {
      env: { OPENAI_KEY: 'sk-a' },
      resolveSecret: async (name) => (name === 'prod/openai' ? 'sk-b' : undefined),
      defaultConcurrency: 8,
    });
    expect(resolved.map((r) => [r.pattern, r.apiKey, r.maxConcurrency, r.requestsPerMinute])).toEqual([
      ['a', 'sk-a', 50, 500],
      ['b', 'sk-b', 8, undefined],
      ['c', undefined, 8, undefined],
    ]);
  });

  it('gives every model of a route one shared upstream, and the rest the default route', async () => {
    const routes = await resolveRoutes(parseRoutes({ 'gpt-4o*': { baseUrl: 'http://a/v1', maxConcurrency: 10 } }), {
      env: {},
      defaultConcurrency: 64,
    });
    const router = createUpstreamRouter(
      { baseUrl: 'http://default/v1', apiKey: undefined, concurrency: 64, timeoutMs: 1_000, maxAttempts: 1, baseBackoffMs: 1, routes },
      systemClock,
    );
    expect(router.route('gpt-4o')).toBe(router.route('gpt-4o-mini'));
    expect(router.route('other')).not.toBe(router.route('gpt-4o'));
    expect(router.route(TEST_MODEL)).not.toBe(router.route('other'));
    expect(router.status!()).toEqual([
      { route: 'gpt-4o*', concurrencyLimit: 10, maxConcurrency: 10, inFlight: 0, waiting: 0 },
      { route: 'default', concurrencyLimit: 64, maxConcurrency: 64, inFlight: 0, waiting: 0 },
    ]);
    const noDefault = createUpstreamRouter(
      { baseUrl: undefined, apiKey: undefined, concurrency: 4, timeoutMs: 1, maxAttempts: 1, baseBackoffMs: 1, routes },
      systemClock,
    );
    expect(noDefault.route('other')).toBeUndefined();
    expect(noDefault.route('gpt-4o')).toBeDefined();
  });
});
