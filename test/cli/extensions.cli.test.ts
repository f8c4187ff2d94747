// `batch retry` and `batch results` against a started service: after a partly failed batch only the
// failed lines run again, in a batch linked to the first; result lines while and after it runs.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLine, chatLines, client, waitForBatch, writeJsonl } from '../support/e2e.js';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';
import { jsonLines, runCli, tempDir } from './run-cli.js';

describe('batch retry and batch results', () => {
  let upstream: UpstreamSim;
  let service: ServiceProcess;
  let alice: Record<string, string>;
  let bob: Record<string, string>;

  beforeAll(async () => {
    upstream = await startUpstreamSim({ latencyMs: 5 });
    service = await startServiceProcess({
      env: {
        API_KEYS: 'alice-key:alpha,bob-key:beta',
        UPSTREAM_BASE_URL: upstream.baseURL,
        UPSTREAM_CONCURRENCY: '2',
        UPSTREAM_MAX_ATTEMPTS: '1',
        CHUNK_MAX_REQUESTS: '5',
      },
    });
    alice = { OPENAI_BASE_URL: service.baseURL, OPENAI_API_KEY: 'alice-key' };
    bob = { OPENAI_BASE_URL: service.baseURL, OPENAI_API_KEY: 'bob-key' };
  });
  afterAll(async () => {
    await service?.removeDataDir();
    await upstream?.close();
  });

  it('retry --wait after a partly failed batch runs only the failed lines again, in a linked batch', async () => {
    upstream.configure({
      failWhen: (_body, { key }) => {
        if (key.includes('FLAKY')) return { status: 502, body: { error: { message: 'bad gateway', type: 'server_error' } } };
        if (key.includes('REJECT')) return { status: 400, body: { error: { message: 'bad prompt', type: 'invalid_request_error' } } };
        return undefined;
      },
    });
    const input = await writeJsonl([
      ...chatLines(8),
      chatLine('flaky, "one"', 'FLAKY 1 — ünïcode'),
      chatLine('rejected', 'REJECT'),
      chatLine('flaky-two', 'FLAKY 2'),
    ]);
    const first = await runCli(['submit', input, '--wait', '--output', await tempDir(), '--poll-interval', '100ms'], { env: alice });
    expect(first.code).toBe(0);
    const firstId = first.stdout.trim();

    upstream.configure({ failWhen: undefined });
    upstream.reset();
    const dir = path.join(await tempDir(), 'retry');
    const retry = await runCli(['retry', firstId, '--wait', '--output', dir, '--poll-interval', '100ms'], { env: alice });
    expect(retry.stderr).not.toMatch(/\n\s+at /);
    expect(retry.code).toBe(0);
    const retryId = retry.stdout.trim();
    expect(retryId).toMatch(/^batch_\w+$/);
    expect(retry.stderr).toContain(`${retryId} retries the failed lines of ${firstId}`);
    const output = jsonLines(await readFile(path.join(dir, 'output.jsonl'), 'utf8'));
    expect(output.map((line) => line.custom_id).sort()).toEqual(['flaky, "one"', 'flaky-two']);
    expect(upstream.stats().requests).toBe(2);
    const summary = JSON.parse(await readFile(path.join(dir, 'summary.json'), 'utf8'));
    expect(summary.x_retry_of).toBe(firstId);
    const status = await runCli(['status', firstId, '--json'], { env: alice });
    expect(JSON.parse(status.stdout).x_retried_by).toBe(retryId);

    // The 400 is not retriable by default, but can be chosen; the first batch is retried once only.
    const again = await runCli(['retry', firstId, '--codes', '400'], { env: alice });
    expect(again.code).toBe(1);
    expect(again.stderr.trim()).toMatch(
      /^error: Batch \S+ was already retried by \S+: retry that batch instead\. \(already_retried, HTTP 409\)$/,
    );
  });

  it('retry --codes picks lines by status or error code; bad codes exit 2 before asking the service', async () => {
    upstream.configure({
      failWhen: (_body, { key }) =>
        key.includes('REJECT') ? { status: 422, body: { error: { message: 'bad prompt', type: 'invalid_request_error' } } } : undefined,
    });
    const openai = client(service.baseURL, 'alice-key');
    const input = await writeJsonl([...chatLines(3), chatLine('rejected-1', 'REJECT'), chatLine('rejected-2', 'REJECT')]);
    const submitted = await runCli(['submit', input], { env: alice });
    const id = submitted.stdout.trim();
    await waitForBatch(openai, id);
    upstream.configure({ failWhen: undefined });

    const none = await runCli(['retry', id], { env: alice });
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/nothing_to_retry, HTTP 409/);
    const bad = await runCli(['retry', id, '--codes', '4?x'], { env: alice });
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    const hidden = await runCli(['retry', id], { env: bob });
    expect(hidden.code).toBe(1);
    expect(hidden.stderr).toMatch(/not_found, HTTP 404/);

    const chosen = await runCli(['retry', id, '--codes', '4xx'], { env: alice });
    expect(chosen.code).toBe(0);
    const done = await waitForBatch(openai, chosen.stdout.trim());
    expect(done.request_counts).toEqual({ total: 2, completed: 2, failed: 0 });
  });

  it('results prints the result lines as JSONL, and --custom-id one line', async () => {
    upstream.configure({ failWhen: undefined, latencyMs: 5 });
    const openai = client(service.baseURL, 'alice-key');
    const input = await writeJsonl(chatLines(12));
    const id = (await runCli(['submit', input], { env: alice })).stdout.trim();
    await waitForBatch(openai, id);

    const all = await runCli(['results', id], { env: alice });
    expect(all.code).toBe(0);
    const lines = jsonLines(all.stdout);
    expect(lines.map((line) => line.custom_id).sort()).toEqual(
      chatLines(12)
        .map((line) => line.custom_id)
        .sort(),
    );
    expect(all.stderr.trim()).toBe('12 result lines so far');

    const one = await runCli(['results', id, '--custom-id', 'req-7'], { env: alice });
    expect(one.code).toBe(0);
    expect(JSON.parse(one.stdout)).toMatchObject({ custom_id: 'req-7', response: { status_code: 200 } });

    const missing = await runCli(['results', id, '--custom-id', 'nope'], { env: alice });
    expect(missing.code).toBe(1);
    expect(missing.stderr.trim()).toMatch(/^error: Batch \S+ has no result for custom_id 'nope' yet\. \(result_not_found, HTTP 404\)$/);
  });
});
