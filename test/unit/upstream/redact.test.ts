// Upstream keys never leave the service: the redactor of every configured key, on text and on log lines.
import { describe, expect, it } from 'vitest';
import type { Logger } from '../../../shared/log.js';
import { keyRedactor, redactingLogger } from '../../../shared/upstream/redact.js';
import { createUpstreamRouter } from '../../../shared/upstream/router.js';

describe('redaction of upstream keys', () => {
  it('replaces every configured key, the longer first, and leaves other text as it is', () => {
    const redactor = keyRedactor(['sk-abc', 'sk-abcdef', undefined, '']);
    expect(redactor.redact('a sk-abcdef b sk-abc c')).toBe('a [redacted] b [redacted] c');
    const untouched = 'nothing secret here';
    expect(redactor.redact(untouched)).toBe(untouched);
    expect(keyRedactor([undefined]).active).toBe(false);
  });

  it('also finds a key as it appears inside a JSON string', () => {
    const redactor = keyRedactor(['key"with\\quote']);
    expect(redactor.redact(JSON.stringify({ echo: 'Bearer key"with\\quote' }))).toBe('{"echo":"Bearer [redacted]"}');
  });

  it('redacts log messages and fields, nested ones too', () => {
    const lines: unknown[] = [];
    const sink: Logger = { log: (level, message, fields) => lines.push({ level, message, fields }) };
    const log = redactingLogger(sink, keyRedactor(['sk-live-1']));
    log.log('warn', 'saw sk-live-1', { error: 'Bearer sk-live-1', nested: { list: ['sk-live-1'] }, count: 3 });
    expect(lines).toEqual([
      { level: 'warn', message: 'saw [redacted]', fields: { error: 'Bearer [redacted]', nested: { list: ['[redacted]'] }, count: 3 } },
    ]);
  });

  it('is built by the router from the default key and every route key', () => {
    const router = createUpstreamRouter(
      {
        baseUrl: 'http://default/v1',
        apiKey: 'sk-default',
        concurrency: 1,
        timeoutMs: 1_000,
        maxAttempts: 1,
        baseBackoffMs: 1,
        routes: [{ pattern: 'qwen-*', baseUrl: 'http://qwen/v1', apiKey: 'sk-qwen', maxConcurrency: 1 }],
      },
      { now: () => 0, sleep: async () => {} },
    );
    expect(router.redactor!.redact('sk-default sk-qwen')).toBe('[redacted] [redacted]');
  });
});
