// Every file of the bad-input corpus (test/fixtures/bad, written by generate.ts) through the real
// service with the official openai SDK, each with its expected outcome:
//   - refused at upload: the HTTP status and error code of the envelope, and no file is kept;
//   - refused by validation: the batch fails with exactly these [line, code] errors, all at once;
//   - tolerated: the batch completes, with every custom_id of the file exactly once in the results.
// Nothing of a refused file reaches the upstream: the simulator sees exactly the tolerated requests.
//
// What is tolerated: a UTF-8 BOM (at the start of the file, or of a line), CRLF and mixed line
// endings, blank and whitespace-only lines (skipped; line numbers still count them), no final
// newline, whitespace around the JSON, extra fields, any key order, duplicate keys (the last one
// wins, as in JSON.parse), escapes anywhere, /v4 urls, stream false or null, any custom_id that is
// a non-empty string (unicode as is, not normalized: "café" and "cafe\u0301" are two ids).
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type OpenAI from 'openai';
import { toFile } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CORPUS, CORPUS_DIR, CORPUS_LIMITS } from '../fixtures/bad/generate.js';
import { client, collectResults, waitForBatch } from '../support/e2e.js';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';

type Outcome =
  | { upload: [status: 400 | 413, code: string] }
  | { failed: Array<[line: number | null, code: string]> }
  | { completed: number };

const refused = (status: 400 | 413, code: string): Outcome => ({ upload: [status, code] });
const failed = (...errors: Array<[number | null, string]>): Outcome => ({ failed: errors });
const completed = (total: number): Outcome => ({ completed: total });

const EXPECTED: Record<string, Outcome> = {
  // tolerated
  'ok-basic.jsonl': completed(3),
  'ok-bom.jsonl': completed(3),
  'ok-crlf.jsonl': completed(3),
  'ok-mixed-line-endings.jsonl': completed(4),
  'ok-blank-lines.jsonl': completed(3),
  'ok-whitespace-lines.jsonl': completed(2),
  'ok-no-trailing-newline.jsonl': completed(3),
  'ok-leading-spaces.jsonl': completed(2),
  'ok-pretty-spacing.jsonl': completed(2),
  'ok-unicode-ids.jsonl': completed(6),
  'ok-unicode-lookalike-ids.jsonl': completed(4),
  'ok-escaped-custom-id.jsonl': completed(2),
  'ok-escaped-key.jsonl': completed(2),
  'ok-escapes-in-content.jsonl': completed(1),
  'ok-lone-surrogate-in-content.jsonl': completed(2),
  'ok-newline-in-id.jsonl': completed(2),
  'ok-v4-urls.jsonl': completed(2),
  'ok-extra-fields.jsonl': completed(2),
  'ok-key-order.jsonl': completed(2),
  'ok-duplicate-keys-last-wins.jsonl': completed(2),
  'ok-stream-false.jsonl': completed(2),
  'ok-numbers.jsonl': completed(1),
  'ok-nested-100.jsonl': completed(2),
  'ok-long-id.jsonl': completed(2),
  'ok-line-just-under-limit.jsonl': completed(2),
  'ok-exactly-max-requests.jsonl': completed(100),
  'ok-bom-on-later-line.jsonl': completed(2),

  // refused at upload
  'upload-empty.jsonl': refused(400, 'empty_file'),
  'upload-whitespace-only.jsonl': refused(400, 'empty_file'),
  'upload-blank-lines-only.jsonl': refused(400, 'empty_file'),
  'upload-bom-only.jsonl': refused(400, 'empty_file'),
  'upload-bom-and-blank-lines.jsonl': refused(400, 'empty_file'),
  'upload-png.png': refused(400, 'invalid_file_format'),
  'upload-zip.zip': refused(400, 'invalid_file_format'),
  'upload-gzip.jsonl.gz': refused(400, 'invalid_file_format'),
  'upload-utf16le-bom.jsonl': refused(400, 'invalid_file_format'),
  'upload-utf16be-bom.jsonl': refused(400, 'invalid_file_format'),
  'upload-utf16le-no-bom.jsonl': refused(400, 'invalid_file_format'),
  'upload-nul-byte-on-line-3.jsonl': refused(400, 'invalid_file_format'),
  'upload-json-array.json': refused(400, 'invalid_file_format'),
  'upload-pretty-printed.json': refused(400, 'invalid_file_format'),
  'upload-csv.csv': refused(400, 'invalid_file_format'),
  'upload-plain-text.txt': refused(400, 'invalid_file_format'),
  'upload-html.html': refused(400, 'invalid_file_format'),
  'upload-first-line-invalid-json.jsonl': refused(400, 'invalid_file_format'),
  'upload-first-line-not-utf8.jsonl': refused(400, 'invalid_file_format'),
  'upload-first-line-array.jsonl': refused(400, 'invalid_file_format'),
  'upload-half-bom.jsonl': refused(400, 'invalid_file_format'),
  'upload-line-too-long.jsonl': refused(413, 'line_too_large'),
  'upload-two-lines-too-long.jsonl': refused(413, 'line_too_large'),
  'upload-one-line-no-newline-too-long.jsonl': refused(413, 'line_too_large'),
  'upload-too-many-requests.jsonl': refused(400, 'too_many_tasks'),
  'upload-too-many-bytes.jsonl': refused(413, 'file_too_large'),

  // refused by validation: every bad line, numbered
  'invalid-json-line.jsonl': failed([2, 'invalid_json_line']),
  'truncated-last-line.jsonl': failed([3, 'invalid_json_line']),
  'trailing-comma.jsonl': failed([2, 'invalid_json_line']),
  'single-quotes.jsonl': failed([2, 'invalid_json_line']),
  'nan-and-infinity.jsonl': failed([2, 'invalid_json_line'], [3, 'invalid_json_line']),
  'comments.jsonl': failed([2, 'invalid_json_line'], [3, 'invalid_json_line']),
  'non-utf8-on-line-2.jsonl': failed([2, 'invalid_json_line']),
  'overlong-utf8.jsonl': failed([2, 'invalid_json_line']),
  'utf8-encoded-surrogate.jsonl': failed([2, 'invalid_json_line']),
  'raw-control-char-in-string.jsonl': failed([2, 'invalid_json_line']),
  'lines-not-objects.jsonl': failed(
    [2, 'invalid_json_line'],
    [3, 'invalid_json_line'],
    [4, 'invalid_json_line'],
    [5, 'invalid_json_line'],
    [6, 'invalid_json_line'],
  ),
  'missing-custom-id.jsonl': failed([2, 'missing_custom_id']),
  'empty-custom-id.jsonl': failed([2, 'invalid_custom_id']),
  'non-string-custom-ids.jsonl': failed(
    [2, 'invalid_custom_id'],
    [3, 'invalid_custom_id'],
    [4, 'invalid_custom_id'],
    [5, 'invalid_custom_id'],
    [6, 'invalid_custom_id'],
  ),
  'duplicate-custom-ids.jsonl': failed([3, 'duplicate_custom_id'], [5, 'duplicate_custom_id'], [6, 'duplicate_custom_id']),
  'duplicate-custom-id-escaped.jsonl': failed([2, 'duplicate_custom_id']),
  'method-not-post.jsonl': failed([2, 'invalid_method'], [3, 'invalid_method'], [4, 'invalid_method'], [5, 'invalid_method']),
  'url-not-endpoint.jsonl': failed([2, 'url_mismatch'], [3, 'url_mismatch'], [4, 'url_mismatch'], [5, 'url_mismatch'], [6, 'missing_url']),
  'body-missing-or-wrong.jsonl': failed([2, 'missing_body'], [3, 'missing_body'], [4, 'missing_body'], [5, 'missing_body']),
  'model-missing-or-wrong.jsonl': failed([2, 'missing_model'], [3, 'missing_model'], [4, 'missing_model'], [5, 'missing_model']),
  'mixed-models.jsonl': failed([2, 'model_mismatch'], [4, 'model_mismatch']),
  'stream-true.jsonl': failed([2, 'stream_not_supported']),
  'deeply-nested-300.jsonl': failed([2, 'json_too_deep']),
  'deeply-nested-1900.jsonl': failed([2, 'json_too_deep']),
  'huge-numbers.jsonl': failed([2, 'number_out_of_range'], [3, 'number_out_of_range'], [4, 'number_out_of_range']),
  'every-problem-at-once.jsonl': failed(
    [2, 'invalid_json_line'],
    [3, 'missing_custom_id'],
    [4, 'duplicate_custom_id'],
    [5, 'invalid_method'],
    [6, 'url_mismatch'],
    [7, 'missing_body'],
    [8, 'missing_model'],
    [9, 'model_mismatch'],
    [10, 'stream_not_supported'],
  ),
  'errors-after-blank-lines-and-crlf.jsonl': failed([4, 'invalid_method'], [6, 'invalid_json_line']),
};

/** The custom_ids of a tolerated file, read the way the service reads it (BOMs dropped by the decoder). */
function idsOf(data: Buffer): string[] {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  return decoder
    .decode(data)
    .split('\n')
    .filter((line) => line.trim())
    .map((line) => (JSON.parse(line.replace(/^\uFEFF/, '')) as { custom_id: string }).custom_id);
}

async function mapLimited<T, R>(items: T[], limit: number, run: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      for (let i = next++; i < items.length; i = next++) results[i] = await run(items[i]!);
    }),
  );
  return results;
}

describe('the bad-input corpus', () => {
  let sim: UpstreamSim;
  let service: ServiceProcess;
  let openai: OpenAI;

  beforeAll(async () => {
    sim = await startUpstreamSim();
    service = await startServiceProcess({ env: { UPSTREAM_BASE_URL: sim.baseURL, ...CORPUS_LIMITS } });
    openai = client(service.baseURL);
  });
  afterAll(async () => {
    await service?.removeDataDir();
    await sim?.close();
  });

  it('has an expected outcome for every file, and at least 60 files', () => {
    expect(Object.keys(EXPECTED).sort()).toEqual(Object.keys(CORPUS).sort());
    expect(Object.keys(EXPECTED).length).toBeGreaterThanOrEqual(60);
  });

  it('answers every file as expected', async () => {
    const names = Object.keys(EXPECTED);
    const outcomes = await mapLimited(names, 8, async (name) => {
      const data = await readFile(path.join(CORPUS_DIR, name));
      let file: OpenAI.Files.FileObject;
      try {
        file = await openai.files.create({ file: await toFile(data, name), purpose: 'batch' });
      } catch (error) {
        const e = error as { status?: number; error?: { code?: string; type?: string; message?: string } };
        return { name, data, upload: [e.status, e.error?.code] as const, message: e.error?.message };
      }
      const batch = await openai.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
      const done = await waitForBatch(openai, batch.id);
      return { name, data, batch: done };
    });

    let tolerated = 0;
    const problems: string[] = [];
    for (const outcome of outcomes) {
      const expected = EXPECTED[outcome.name]!;
      const got =
        'upload' in outcome
          ? { upload: outcome.upload }
          : outcome.batch.status === 'failed'
            ? { failed: (outcome.batch.errors?.data ?? []).map((e) => [e.line ?? null, e.code]) }
            : { [outcome.batch.status]: outcome.batch.request_counts?.total };
      if (JSON.stringify(got) !== JSON.stringify(expected)) {
        problems.push(
          `${outcome.name}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(got)}${'message' in outcome ? ` (${outcome.message})` : ''}`,
        );
        continue;
      }
      if ('upload' in outcome) {
        expect(outcome.message, outcome.name).toBeTruthy();
        continue;
      }
      if ('failed' in expected) {
        // Every error names its line in its message, and a failed batch has no results.
        for (const error of outcome.batch.errors!.data!) expect(error.message, outcome.name).toMatch(/^Line \d+: /);
        expect(outcome.batch.output_file_id, outcome.name).toBeNull();
        expect(outcome.batch.error_file_id, outcome.name).toBeNull();
        continue;
      }
      tolerated += outcome.batch.request_counts!.total;
      const results = await collectResults(openai, outcome.batch);
      expect(results.duplicates, outcome.name).toEqual([]);
      expect([...results.ids].sort(), outcome.name).toEqual(idsOf(outcome.data).sort());
      expect(outcome.batch.request_counts, outcome.name).toMatchObject({ completed: outcome.batch.request_counts!.total, failed: 0 });
    }
    expect(problems).toEqual([]);
    // Nothing of a refused file went upstream: the simulator saw exactly the tolerated requests.
    expect(sim.stats().requests).toBe(tolerated);
    // No refused upload left a file behind.
    const files = await openai.files.list({ purpose: 'batch' });
    expect(files.data.length).toBe(outcomes.filter((o) => !('upload' in o)).length);
  });
});
