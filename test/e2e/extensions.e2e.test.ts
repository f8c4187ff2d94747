// The extension routes under /v1/x/, driven with the official SDK's client.get / client.post:
// retrying the failed lines of a batch, results while a batch runs, usage and cost.
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type OpenAI from 'openai';
import type { Batch } from 'openai/resources/batches';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLine, chatLines, client, collectResults, type ResultLine, submit, waitForBatch } from '../support/e2e.js';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';

type XBatch = Batch & { x_retry_of?: string; x_retried_by?: string };
interface ResultsPage {
  object: 'list';
  data: ResultLine[];
  has_more: boolean;
  next_after: string;
  x_batch_status: string;
}

async function apiError(promise: Promise<unknown>): Promise<{ status: number; code: string | null; message: string }> {
  try {
    await promise;
  } catch (error) {
    const e = error as { status: number; code: string | null; message: string };
    return { status: e.status, code: e.code, message: e.message };
  }
  throw new Error('expected the call to fail');
}

describe('extension routes (/v1/x/)', () => {
  let upstream: UpstreamSim;
  let service: ServiceProcess;
  let alice: OpenAI;
  let bob: OpenAI;

  beforeAll(async () => {
    upstream = await startUpstreamSim({ latencyMs: 5 });
    const dir = await mkdtemp(path.join(os.tmpdir(), 'batch-x-'));
    const routes = path.join(dir, 'routes.json');
    await writeFile(
      routes,
      JSON.stringify({
        'priced-*': { baseUrl: upstream.baseURL, inputPricePerMillion: 2.5, outputPricePerMillion: 10 },
        'sim-model': { baseUrl: upstream.baseURL },
      }),
    );
    service = await startServiceProcess({
      env: {
        API_KEYS: 'alice-key:alpha,bob-key:beta',
        UPSTREAM_ROUTES: routes,
        UPSTREAM_CONCURRENCY: '1',
        UPSTREAM_MAX_ATTEMPTS: '1',
        UPSTREAM_TIMEOUT: '5s',
        CHUNK_MAX_REQUESTS: '4',
        LOCAL_WORKERS: '1',
      },
    });
    alice = client(service.baseURL, 'alice-key');
    bob = client(service.baseURL, 'bob-key');
  });
  afterAll(async () => {
    await service?.removeDataDir();
    await upstream?.close();
  });

  it('retries only the retriable failed lines, from the original input, linked both ways', async () => {
    upstream.configure({
      latencyMs: 5,
      failWhen: (_body, { key }) => {
        if (key.includes('FLAKY')) return { status: 503, body: { error: { message: 'overloaded', type: 'server_error' } } };
        if (key.includes('LIMIT')) return { status: 429, body: { error: { message: 'slow down', type: 'rate_limit' } } };
        if (key.includes('REJECT')) return { status: 400, body: { error: { message: 'bad prompt', type: 'invalid_request_error' } } };
        return undefined;
      },
    });
    const lines = [
      ...chatLines(6),
      chatLine('flaky-1', 'FLAKY one, with "quotes" and ünïcode'),
      chatLine('limited-1', 'LIMIT me'),
      chatLine('rejected-1', 'REJECT me'),
      chatLine('flaky-2', 'FLAKY two'),
    ];
    const created = await submit(alice, lines);
    const first = await waitForBatch(alice, created.id);
    expect(first.status).toBe('completed');
    expect(first.request_counts).toEqual({ total: 10, completed: 6, failed: 4 });

    // Another project's batch is not there, exactly like a missing one.
    expect(await apiError(bob.post(`/x/batches/${first.id}/retry`, { body: {} }))).toMatchObject({ status: 404, code: 'not_found' });

    upstream.configure({ failWhen: undefined });
    upstream.reset();
    // Two retries at once: one batch is made, the other is told it exists.
    const racing = await Promise.allSettled([0, 1].map(() => alice.post(`/x/batches/${first.id}/retry`, { body: {} })));
    const made = racing.filter((outcome) => outcome.status === 'fulfilled');
    expect(made).toHaveLength(1);
    expect(racing.find((outcome) => outcome.status === 'rejected')).toMatchObject({ reason: { status: 409, code: 'already_retried' } });
    const retry = (made[0] as PromiseFulfilledResult<XBatch>).value;
    expect(retry.id).not.toBe(first.id);
    expect(retry.x_retry_of).toBe(first.id);
    expect(retry.input_file_id).not.toBe(first.input_file_id);
    const done = (await waitForBatch(alice, retry.id)) as XBatch;
    expect(done.status).toBe('completed');
    expect(done.request_counts).toEqual({ total: 3, completed: 3, failed: 0 });
    const { output } = await collectResults(alice, done);
    expect(output.map((line) => line.custom_id).sort()).toEqual(['flaky-1', 'flaky-2', 'limited-1']);
    // Only the failed lines went upstream again, as they were written.
    expect(upstream.stats().requests).toBe(3);
    const input = await (await alice.files.content(retry.input_file_id)).text();
    expect(input).toContain('FLAKY one, with \\"quotes\\" and ünïcode');
    expect(input.trim().split('\n')).toHaveLength(3);

    const old = (await alice.batches.retrieve(first.id)) as XBatch;
    expect(old.x_retried_by).toBe(retry.id);
    // A batch is retried once: its retry is retried next.
    expect(await apiError(alice.post(`/x/batches/${first.id}/retry`, { body: {} }))).toMatchObject({
      status: 409,
      code: 'already_retried',
    });
    // Nothing failed in the retry: nothing to retry.
    expect(await apiError(alice.post(`/x/batches/${done.id}/retry`, { body: {} }))).toMatchObject({
      status: 409,
      code: 'nothing_to_retry',
    });
  });

  it('retries the lines with the chosen codes or statuses only', async () => {
    upstream.configure({
      failWhen: (_body, { key }) =>
        key.includes('REJECT') ? { status: 400, body: { error: { message: 'bad prompt', type: 'invalid_request_error' } } } : undefined,
    });
    const created = await submit(alice, [...chatLines(3), chatLine('rejected-1', 'REJECT me'), chatLine('rejected-2', 'REJECT too')]);
    const first = await waitForBatch(alice, created.id);
    expect(first.request_counts).toEqual({ total: 5, completed: 3, failed: 2 });
    // 400 is not retriable by default.
    expect(await apiError(alice.post(`/x/batches/${first.id}/retry`, { body: {} }))).toMatchObject({
      status: 409,
      code: 'nothing_to_retry',
    });
    // Bad selections are the client's mistake: 400, nothing made.
    expect(await apiError(alice.post(`/x/batches/${first.id}/retry`, { body: { statuses: ['five hundred'] } }))).toMatchObject({
      status: 400,
    });
    expect(await apiError(alice.post(`/x/batches/${first.id}/retry`, { body: { colour: 'red' } }))).toMatchObject({ status: 400 });
    expect((await alice.batches.retrieve(first.id)) as XBatch).not.toHaveProperty('x_retried_by');

    upstream.configure({ failWhen: undefined });
    const retry = (await alice.post(`/x/batches/${first.id}/retry`, { body: { statuses: [400] } })) as XBatch;
    const done = await waitForBatch(alice, retry.id);
    expect(done.request_counts).toEqual({ total: 2, completed: 2, failed: 0 });
  });

  it('refuses to retry a batch that has not ended', async () => {
    upstream.configure({ latencyMs: 300 });
    const created = await submit(alice, chatLines(8));
    await waitForBatch(alice, created.id, (batch) => batch.status === 'in_progress');
    expect(await apiError(alice.post(`/x/batches/${created.id}/retry`, { body: {} }))).toMatchObject({
      status: 409,
      code: 'batch_not_ended',
    });
    await alice.batches.cancel(created.id);
    const cancelled = await waitForBatch(alice, created.id);
    upstream.configure({ latencyMs: 5 });
    // The lines a cancel left unrun are retriable (batch_cancelled).
    const retry = (await alice.post(`/x/batches/${cancelled.id}/retry`, { body: { codes: ['batch_cancelled'] } })) as XBatch;
    const done = await waitForBatch(alice, retry.id);
    expect(done.status).toBe('completed');
    expect(done.request_counts?.total).toBe(cancelled.request_counts?.failed);
  });

  it('pages the results recorded so far while the batch runs, and looks one up by custom_id', async () => {
    upstream.configure({ latencyMs: 150, failWhen: undefined });
    const created = await submit(alice, chatLines(16));
    // Some chunks are recorded while others still run.
    let running: ResultsPage | undefined;
    for (let i = 0; i < 200 && !running; i++) {
      const page = (await alice.get(`/x/batches/${created.id}/results`)) as ResultsPage;
      if (page.data.length > 0 && page.x_batch_status === 'in_progress') running = page;
      else await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(running).toBeDefined();
    expect(running!.data.length % 4).toBe(0);
    const one = running!.data[0]!;
    expect(await alice.get(`/x/batches/${created.id}/results`, { query: { custom_id: one.custom_id } })).toEqual(one);
    // A line not recorded yet (or never) is a clear 404.
    expect(await apiError(alice.get(`/x/batches/${created.id}/results`, { query: { custom_id: 'no-such-line' } }))).toMatchObject({
      status: 404,
      code: 'result_not_found',
    });

    // Polling from where the last page stopped gets every line once, whatever order chunks end in.
    const seen = running!.data.map((line) => line.custom_id);
    let after = running!.next_after;
    for (let i = 0; i < 400; i++) {
      const batch = await alice.batches.retrieve(created.id);
      if (batch.status !== 'in_progress' && batch.status !== 'finalizing') break;
      const answer = alice.get(`/x/batches/${created.id}/results`, { query: { after, limit: 3 } }) as Promise<ResultsPage>;
      const page = await answer.catch(async (error: unknown) => {
        // The batch ended between the retrieve and this page: the cursor is told so (409), and the
        // results are its files now (read below).
        expect(await apiError(Promise.reject(error))).toMatchObject({ status: 409, code: 'results_moved' });
        return undefined;
      });
      if (!page) break;
      seen.push(...page.data.map((line) => line.custom_id));
      after = page.next_after;
      if (!page.has_more) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(new Set(seen).size).toBe(seen.length);

    // Ended: the results are the output and error files, paged from the start.
    const ended = await waitForBatch(alice, created.id);
    expect(ended.status).toBe('completed');
    const all: string[] = [];
    let cursor: string | undefined;
    for (;;) {
      const page = (await alice.get(`/x/batches/${created.id}/results`, {
        query: { limit: 5, ...(cursor ? { after: cursor } : {}) },
      })) as ResultsPage;
      all.push(...page.data.map((line) => line.custom_id));
      cursor = page.next_after;
      if (!page.has_more) break;
    }
    expect(all.sort()).toEqual(
      chatLines(16)
        .map((line) => line.custom_id)
        .sort(),
    );
    expect(await alice.get(`/x/batches/${created.id}/results`, { query: { custom_id: 'req-16' } })).toMatchObject({
      custom_id: 'req-16',
      response: { status_code: 200 },
    });
    expect(await apiError(alice.get(`/x/batches/${created.id}/results`, { query: { after: 'not-a-cursor' } }))).toMatchObject({
      status: 400,
    });
    expect(await apiError(alice.get(`/x/batches/${created.id}/results`, { query: { limit: 0 } }))).toMatchObject({ status: 400 });
    expect(await apiError(bob.get(`/x/batches/${created.id}/results`))).toMatchObject({ status: 404, code: 'not_found' });
  });

  it('sums usage and prices it when the route carries prices', async () => {
    upstream.configure({ latencyMs: 5, failWhen: undefined });
    const priced = await waitForBatch(alice, (await submit(alice, chatLines(4, { model: 'priced-1' }))).id);
    const usage = (await alice.get(`/x/batches/${priced.id}/usage`)) as Record<string, any>;
    expect(usage).toMatchObject({ object: 'batch.usage', batch_id: priced.id, model: 'priced-1', status: 'completed' });
    expect(usage.input_tokens).toBe(priced.usage?.input_tokens);
    expect(usage.output_tokens).toBe(priced.usage?.output_tokens);
    expect(usage.input_tokens).toBeGreaterThan(0);
    const expected = (usage.input_tokens * 2.5 + usage.output_tokens * 10) / 1e6;
    expect(usage.cost.currency).toBe('USD');
    expect(usage.cost.total).toBeCloseTo(expected, 6);

    const unpriced = await waitForBatch(alice, (await submit(alice, chatLines(2))).id);
    expect(((await alice.get(`/x/batches/${unpriced.id}/usage`)) as Record<string, unknown>).cost).toBeNull();
    expect(await apiError(bob.get(`/x/batches/${priced.id}/usage`))).toMatchObject({ status: 404 });
    expect(await apiError(alice.get('/x/batches/batch_nonexistent/usage'))).toMatchObject({ status: 404 });
  });
});
