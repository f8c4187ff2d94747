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
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type OpenAI from 'openai';
import { toFile } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CORPUS, CORPUS_DIR, CORPUS_LIMITS, MULTIPART_CONTENT_TYPE, MULTIPART_CORPUS, MULTIPART_DIR } from '../fixtures/bad/generate.js';
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

  /** Requests of the tolerated files (what the upstream may see), and the files taken. */
  let tolerated = 0;
  let taken = 0;

  it.concurrent.each(Object.keys(EXPECTED))('%s', async (name) => {
    const expected = EXPECTED[name]!;
    const data = await readFile(path.join(CORPUS_DIR, name));
    let file: OpenAI.Files.FileObject;
    try {
      file = await openai.files.create({ file: await toFile(data, name), purpose: 'batch' });
    } catch (error) {
      const e = error as { status?: number; error?: { code?: string; type?: string; message?: string } };
      expect({ upload: [e.status, e.error?.code] }, e.error?.message).toEqual(expected);
      expect(e.error?.message).toBeTruthy();
      return;
    }
    taken++;
    const batch = await openai.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
    const done = await waitForBatch(openai, batch.id);
    const got =
      done.status === 'failed'
        ? { failed: (done.errors?.data ?? []).map((e) => [e.line ?? null, e.code]) }
        : { [done.status]: done.request_counts?.total };
    expect(got).toEqual(expected);
    if ('failed' in expected) {
      // Every error names its line in its message, and a failed batch has no results.
      for (const error of done.errors!.data!) expect(error.message).toMatch(/^Line \d+: /);
      expect(done.output_file_id).toBeNull();
      expect(done.error_file_id).toBeNull();
      return;
    }
    tolerated += done.request_counts!.total;
    const results = await collectResults(openai, done);
    expect(results.duplicates).toEqual([]);
    expect([...results.ids].sort()).toEqual(idsOf(data).sort());
    expect(done.request_counts).toMatchObject({ completed: done.request_counts!.total, failed: 0 });
  });

  it('sent nothing of a refused file upstream, and kept no refused file', async () => {
    // The simulator saw exactly the tolerated requests.
    expect(sim.stats().requests).toBe(tolerated);
    const files = await openai.files.list({ purpose: 'batch' });
    expect(files.data.length).toBe(taken);
  });
});

// The multipart corpus (test/fixtures/bad/multipart): raw bodies of POST /v1/files, as a dropped
// upload, a broken client or an odd one sends them. Each answers as expected, a refused one keeps
// nothing (no file, no object, no temporary file), and the service goes on: /healthz answers,
// nothing escaped a handler, and every line it wrote is one JSON object without a stack trace.
type MultipartOutcome = { stored: string } | { refused: [status: 400 | 413, code: string | null, param: string | null] };
const storedAs = (filename: string): MultipartOutcome => ({ stored: filename });
const refusedWith = (code: string | null, param: string | null = null, status: 400 | 413 = 400): MultipartOutcome => ({
  refused: [status, code, param],
});

const EXPECTED_MULTIPART: Record<string, MultipartOutcome> = {
  'ok-basic.multipart': storedAs('a.jsonl'),
  'ok-file-before-purpose.multipart': storedAs('a.jsonl'),
  'ok-preamble-and-epilogue.multipart': storedAs('a.jsonl'),
  'ok-second-file-ignored.multipart': storedAs('a.jsonl'),
  'ok-filename-raw-utf8.multipart': storedAs('评测数据.jsonl'),
  'ok-filename-rfc5987.multipart': storedAs('评测数据.jsonl'),
  'ok-filename-emoji-and-accents.multipart': storedAs('ünïcödé-🎉.jsonl'),
  'ok-filename-latin1-rfc5987.multipart': storedAs('naïve.jsonl'),

  'cut-no-closing-boundary.multipart': refusedWith('invalid_multipart'),
  'cut-after-file-headers.multipart': refusedWith('invalid_multipart'),
  'cut-inside-file-headers.multipart': refusedWith('invalid_multipart'),
  'cut-inside-file-bytes.multipart': refusedWith('invalid_multipart'),
  'cut-inside-closing-boundary.multipart': refusedWith('invalid_multipart'),
  'cut-inside-purpose.multipart': refusedWith('invalid_multipart'),
  'cut-empty-body.multipart': refusedWith('invalid_multipart'),

  'bad-no-boundary-lines.multipart': refusedWith('invalid_multipart'),
  'bad-other-boundary.multipart': refusedWith('invalid_multipart'),
  'bad-part-without-headers-end.multipart': refusedWith('invalid_multipart'),
  'bad-part-headers-over-16k.multipart': refusedWith('invalid_multipart'),
  'missing-file-part.multipart': refusedWith(null, 'file'),
  'missing-file-wrong-field.multipart': refusedWith(null, 'file'),
  'missing-purpose.multipart': refusedWith(null, 'purpose'),

  'filename-control-char-rfc5987.multipart': refusedWith('invalid_filename', 'file'),
  'filename-crlf-rfc5987.multipart': refusedWith('invalid_filename', 'file'),
  'filename-del-rfc5987.multipart': refusedWith('invalid_filename', 'file'),
  'filename-c1-control.multipart': refusedWith('invalid_filename', 'file'),
  'filename-line-separator.multipart': refusedWith('invalid_filename', 'file'),
  'filename-paragraph-separator.multipart': refusedWith('invalid_filename', 'file'),
  'filename-too-long.multipart': refusedWith('invalid_filename', 'file'),
  // busboy refuses a raw control character in a part header before any filename rule runs.
  'filename-raw-control-char.multipart': refusedWith('invalid_multipart'),
};

describe('the multipart corpus', () => {
  let service: ServiceProcess;
  let openai: OpenAI;

  beforeAll(async () => {
    service = await startServiceProcess({ env: CORPUS_LIMITS });
    openai = client(service.baseURL);
  });
  afterAll(async () => {
    await service?.removeDataDir();
  });

  it('has an expected outcome for every body', () => {
    expect(Object.keys(EXPECTED_MULTIPART).sort()).toEqual(Object.keys(MULTIPART_CORPUS).sort());
  });

  const storedIds: string[] = [];

  it.each(Object.entries(EXPECTED_MULTIPART))('%s', async (name, expected) => {
    const body = await readFile(path.join(MULTIPART_DIR, name));
    const response = await fetch(`${service.baseURL}/files`, {
      method: 'POST',
      headers: { 'content-type': MULTIPART_CONTENT_TYPE },
      body,
    });
    const answer = (await response.json()) as {
      id?: string;
      filename?: string;
      error?: { code: string | null; param: string | null; type: string };
    };
    if (answer.id) storedIds.push(answer.id);
    const got: MultipartOutcome =
      response.status === 200
        ? { stored: answer.filename! }
        : { refused: [response.status as 400, answer.error!.code, answer.error!.param] };
    expect(got).toEqual(expected);
  });

  it('kept nothing of a refused body, and goes on', async () => {
    // Exactly the taken bodies became files, and the disk holds exactly their objects.
    const files = await openai.files.list({ limit: 100 });
    expect(files.data.map((f) => f.id).sort()).toEqual([...storedIds].sort());
    const objects = (await readdir(path.join(service.dataDir, 'blobs'), { recursive: true, withFileTypes: true })).filter((e) =>
      e.isFile(),
    );
    expect(objects.map((e) => e.name).sort()).toEqual([...storedIds].sort());

    const health = await fetch(`${service.origin}/healthz`);
    expect(await health.json()).toEqual({
      status: 'ok',
      escaped_errors: 0,
      webhooks_delivered: 0,
      webhooks_retried: 0,
      webhooks_given_up: 0,
    });
    const lines = service.logs().split('\n').filter(Boolean);
    for (const line of lines) expect(() => JSON.parse(line), line).not.toThrow();
    expect(service.logs()).not.toMatch(/\n\s+at /);
  });
});
