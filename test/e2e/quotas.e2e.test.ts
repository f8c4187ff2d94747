// Quotas checked at create: a batch larger than its project's quota is refused with a clear 400 and
// nothing is created; a batch over what is left waits (in_progress, nothing sent) until the
// project's earlier batch ends, then runs; a cancelled waiting batch ends at once and holds nothing;
// overrides per project (PROJECT_QUOTAS) and per route (the routes file, by the model of the
// file's first line) apply.
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLines, client, collectResults, submit, upload, waitForBatch, writeJsonl } from '../support/e2e.js';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';

describe('quotas', () => {
  let upstream: UpstreamSim;
  let service: ServiceProcess;

  beforeAll(async () => {
    upstream = await startUpstreamSim({ latencyMs: 40 });
    const routes = path.join(os.tmpdir(), `quota-routes-${process.pid}-${Date.now()}.json`);
    await writeFile(routes, JSON.stringify({ 'capped-*': { baseUrl: upstream.baseURL, maxEnqueuedRequests: 30 } }));
    service = await startServiceProcess({
      env: {
        UPSTREAM_BASE_URL: upstream.baseURL,
        UPSTREAM_ROUTES: routes,
        UPSTREAM_CONCURRENCY: '4',
        CHUNK_MAX_REQUESTS: '10',
        API_KEYS: 'key-a:team-a,key-b:team-b,key-c:team-c',
        PROJECT_MAX_ENQUEUED_REQUESTS: '100',
        MIN_COMPLETION_WINDOW: '1s',
        PROJECT_QUOTAS: JSON.stringify({ 'team-b': { maxEnqueuedRequests: 1000 }, 'team-c': { maxEnqueuedTokens: 50 } }),
      },
    });
  });
  afterAll(async () => {
    await service?.removeDataDir();
    await upstream?.close();
  });

  it('refuses at create a batch larger than the quota itself, naming the limit, and creates nothing', async () => {
    const a = client(service.baseURL, 'key-a');
    const input = await upload(a, await writeJsonl(chatLines(150)));
    const refused = a.batches.create({ input_file_id: input.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
    await expect(refused).rejects.toMatchObject({ status: 400, error: { code: 'quota_exceeded', param: 'input_file_id' } });
    await expect(refused).rejects.toThrow(/150 requests.*at most 100 enqueued at once \(PROJECT_MAX_ENQUEUED_REQUESTS\)/);
    expect((await a.batches.list()).data).toEqual([]);
    // Estimated tokens too: team-c may have 50 enqueued (about 200 bytes of input).
    const c = client(service.baseURL, 'key-c');
    const big = await upload(c, await writeJsonl(chatLines(5)));
    await expect(c.batches.create({ input_file_id: big.id, endpoint: '/v1/chat/completions', completion_window: '24h' })).rejects.toThrow(
      /tokens.*at most 50 enqueued at once \(PROJECT_QUOTAS \(team-c\)\.maxEnqueuedTokens\)/,
    );
    // Another project's own quota lets the same size through.
    const b = client(service.baseURL, 'key-b');
    const ok = await submit(b, chatLines(150));
    expect((await waitForBatch(b, ok.id)).status).toBe('completed');
  });

  it('holds a batch over what is left until the earlier batch ends, then runs it; its window keeps running', async () => {
    const a = client(service.baseURL, 'key-a');
    const first = await submit(a, chatLines(80, { prefix: 'first' }));
    await waitForBatch(a, first.id, (batch) => batch.status === 'in_progress');
    const second = await submit(a, chatLines(50, { prefix: 'second' }));
    // Accepted, validated, and waiting: nothing of it runs while the first holds the quota.
    const waiting = await waitForBatch(a, second.id, (batch) => batch.status === 'in_progress');
    expect(waiting.request_counts).toMatchObject({ total: 50, completed: 0 });
    expect(waiting.expires_at).toBe(waiting.created_at + 24 * 3600);
    expect(waiting).toMatchObject({ x_status_reason: 'waiting for project quota' });
    // The running batch's estimate: after now, before its window's end, and it moves as it runs.
    const running = await waitForBatch(a, first.id, (batch) => (batch.request_counts?.completed ?? 0) >= 10);
    const eta = (running as { x_estimated_completion_at?: number }).x_estimated_completion_at;
    expect(eta).toBeGreaterThanOrEqual(Math.floor(Date.now() / 1000) - 1);
    expect(eta).toBeLessThan(Date.now() / 1000 + 120);
    expect(eta).toBeLessThan(running.expires_at!);
    // The waiting one has an estimate too, no earlier than the running one's (read a moment later:
    // chunks are recorded ten lines at a time, so the measured rate moves a little).
    const waitingEta = ((await a.batches.retrieve(second.id)) as { x_estimated_completion_at?: number }).x_estimated_completion_at;
    expect(waitingEta).toBeGreaterThanOrEqual(eta! - 2);
    const firstDone = await waitForBatch(a, first.id);
    const stillWaitingThen = await a.batches.retrieve(second.id);
    expect(firstDone.status).toBe('completed');
    expect(stillWaitingThen.request_counts!.completed).toBeLessThan(50);
    const secondDone = await waitForBatch(a, second.id);
    expect(secondDone.status).toBe('completed');
    // An ended batch is OpenAI's shape exactly: no estimate, no reason.
    expect(secondDone).not.toHaveProperty('x_estimated_completion_at');
    expect(secondDone).not.toHaveProperty('x_status_reason');
    expect(secondDone.completed_at!).toBeGreaterThanOrEqual(firstDone.completed_at!);
    const { ids, duplicates } = await collectResults(a, secondDone);
    expect(ids.size).toBe(50);
    expect(duplicates).toEqual([]);
  });

  it('ends a cancelled waiting batch at once, and it holds nothing after', async () => {
    const a = client(service.baseURL, 'key-a');
    const first = await submit(a, chatLines(90, { prefix: 'holder' }));
    await waitForBatch(a, first.id, (batch) => batch.status === 'in_progress');
    const waiting = await submit(a, chatLines(40, { prefix: 'cancel me' }));
    await waitForBatch(a, waiting.id, (batch) => batch.status === 'in_progress');
    await a.batches.cancel(waiting.id);
    const cancelled = await waitForBatch(a, waiting.id, undefined, 20_000);
    expect(cancelled.status).toBe('cancelled');
    const { errors } = await collectResults(a, cancelled);
    expect(errors).toHaveLength(40);
    expect(errors.every((line) => line.error?.code === 'batch_cancelled')).toBe(true);
    expect((await waitForBatch(a, first.id)).status).toBe('completed');
    // Nothing leaked: the whole quota is free again.
    const next = await submit(a, chatLines(100, { prefix: 'whole quota' }));
    expect((await waitForBatch(a, next.id)).status).toBe('completed');
  });

  it("refuses at create a batch larger than its route's quota, by the model of its first line, also when uploaded in parts", async () => {
    const a = client(service.baseURL, 'key-a');
    const lines = chatLines(40, { model: 'capped-model' });
    const create = (input_file_id: string) =>
      a.batches.create({ input_file_id, endpoint: '/v1/chat/completions', completion_window: '24h' });
    const whole = await upload(a, await writeJsonl(lines));
    const refused = create(whole.id);
    await expect(refused).rejects.toMatchObject({ status: 400, error: { code: 'quota_exceeded', param: 'input_file_id' } });
    await expect(refused).rejects.toThrow(/40 requests.*at most 30.*the route capped-\*'s maxEnqueuedRequests/);

    const data = Buffer.from(`${lines.map((line) => JSON.stringify(line)).join('\n')}\n`);
    const pending = await a.uploads.create({
      filename: 'capped.jsonl',
      purpose: 'batch',
      bytes: data.length,
      mime_type: 'application/jsonl',
    });
    const halves = [data.subarray(0, 100), data.subarray(100)];
    const parts = [];
    for (const [i, half] of halves.entries()) {
      parts.push(await a.uploads.parts.create(pending.id, { data: new File([new Uint8Array(half)], `part-${i}`) }));
    }
    const done = await a.uploads.complete(pending.id, { part_ids: parts.map((part) => part.id) });
    await expect(create(done.file!.id)).rejects.toMatchObject({ status: 400, error: { code: 'quota_exceeded' } });
    expect((await a.batches.list()).data.filter((batch) => [whole.id, done.file!.id].includes(batch.input_file_id))).toEqual([]);
    // The same lines on a route without a quota run.
    const free = await submit(a, chatLines(40, { prefix: 'uncapped' }));
    expect((await waitForBatch(a, free.id)).status).toBe('completed');
  });

  it('refuses a batch whose estimated end is past its window (window_cannot_be_met), unless asked to run anyway', async () => {
    const b = client(service.baseURL, 'key-b');
    const running = await submit(b, chatLines(400, { prefix: 'pace' }));
    await waitForBatch(b, running.id, (batch) => (batch.request_counts?.completed ?? 0) >= 20);
    const input = await upload(b, await writeJsonl(chatLines(300, { prefix: 'late' })));
    const base = { input_file_id: input.id, endpoint: '/v1/chat/completions' as const, completion_window: '1s' as '24h' };
    const refused = b.batches.create(base);
    await expect(refused).rejects.toMatchObject({ status: 400, error: { code: 'window_cannot_be_met', param: 'completion_window' } });
    await expect(refused).rejects.toThrow(/would end around .* after its completion window ends/);
    const anyway = await b.batches.create({ ...base, x_run_anyway: true } as typeof base);
    expect(anyway.status).toBe('validating');
    await b.batches.cancel(anyway.id);
    expect((await waitForBatch(b, running.id)).status).toBe('completed');
    expect(['cancelled', 'expired']).toContain((await waitForBatch(b, anyway.id)).status);
  });
});
