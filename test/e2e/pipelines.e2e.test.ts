// Pipelines on one machine: the real service with a PIPELINES file. A JSONL file dropped into a
// folder becomes a batch whose results land in the outbox folder; a schedule runs on its own; a bad
// file fails its run clearly and the next one still works; a trigger delivered twice (a request by
// hand repeated, every file seen again after a restart) makes one batch.
import { writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLines, client } from '../support/e2e.js';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';

const KEYS = { reviews: 'key-reviews', other: 'key-other' };

interface Run {
  id: string;
  status: string;
  trigger: string;
  batch_id: string | null;
  source: string;
  destination: string;
  error: { code: string; message: string } | null;
}

describe('pipelines with npm start', () => {
  let upstream: UpstreamSim;
  let service: ServiceProcess;
  let dataDir: string;

  const api = async (route: string, init: RequestInit & { key?: string } = {}) => {
    const response = await fetch(`${service.baseURL}${route}`, {
      ...init,
      headers: { authorization: `Bearer ${init.key ?? KEYS.reviews}`, 'content-type': 'application/json', ...init.headers },
    });
    return { status: response.status, body: (await response.json()) as any };
  };
  const runs = async (pipeline: string): Promise<Run[]> => (await api(`/x/pipelines/${pipeline}/runs?limit=100`)).body.data;
  async function waitForRun(pipeline: string, until: (run: Run) => boolean, timeoutMs = 90_000): Promise<Run> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = (await runs(pipeline)).find(until);
      if (found) return found;
      if (Date.now() > deadline) {
        const logs = service
          .logs()
          .split('\n')
          .filter((line) => !line.includes('"pipeline":"ticker"'));
        writeFileSync('/tmp/svc.log', service.logs());
        throw new Error(`no run of ${pipeline} as expected: ${JSON.stringify(await runs(pipeline))}\n${logs.join('\n').slice(-4000)}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  /** Dropped as a user's copy would be: written elsewhere, then moved into the folder. */
  async function drop(name: string, lines: unknown[] | string): Promise<void> {
    const scratch = path.join(dataDir, 'scratch', name);
    await mkdir(path.dirname(scratch), { recursive: true });
    await writeFile(scratch, typeof lines === 'string' ? lines : `${lines.map((l) => JSON.stringify(l)).join('\n')}\n`);
    await rename(scratch, path.join(dataDir, 'inbox/reviews/drop', name));
  }
  const readOutbox = (run: Run, file: string) => readFile(path.join(dataDir, run.destination, file), 'utf8');
  const customIds = (text: string) =>
    text
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l).custom_id as string);

  beforeAll(async () => {
    upstream = await startUpstreamSim({ latencyMs: 5 });
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'pipelines-e2e-'));
    const config = path.join(dataDir, 'pipelines.json');
    await writeFile(
      config,
      JSON.stringify([
        {
          name: 'drop',
          project: 'reviews',
          trigger: 'object-created',
          source: 'inbox/reviews/drop/',
          destination: 'outbox/reviews/drop/',
          endpoint: '/v1/chat/completions',
          metadata: { job: 'reviews' },
        },
        {
          name: 'ticker',
          project: 'reviews',
          schedule: 'rate(4 seconds)',
          source: 'inbox/reviews/ticker/{yyyy}-{MM}-{dd}.jsonl',
          destination: 'outbox/reviews/ticker/',
          endpoint: '/v1/chat/completions',
        },
      ]),
    );
    service = await startServiceProcess({
      dataDir,
      env: {
        UPSTREAM_BASE_URL: upstream.baseURL,
        API_KEYS: `${KEYS.reviews}:reviews,${KEYS.other}:other`,
        PIPELINES: config,
        CHUNK_MAX_REQUESTS: '10',
      },
    });
  });
  afterAll(async () => {
    await service?.stop();
    await upstream?.close();
    if (dataDir) await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
  });

  it('turns a dropped file into a batch whose results land in the outbox, every custom_id once', { timeout: 180_000 }, async () => {
    await drop('reviews-1.jsonl', chatLines(25));
    const run = await waitForRun('drop', (r) => r.source === 'inbox/reviews/drop/reviews-1.jsonl' && r.status === 'delivered');
    expect(run).toMatchObject({ trigger: 'object-created', error: null, destination: `outbox/reviews/drop/${run.id}/` });
    const output = customIds(await readOutbox(run, 'output.jsonl'));
    expect(output.sort()).toEqual(
      chatLines(25)
        .map((l) => l.custom_id)
        .sort(),
    );
    expect(await readOutbox(run, 'errors.jsonl')).toBe('');
    const summary = JSON.parse(await readOutbox(run, 'summary.json'));
    expect(summary).toMatchObject({
      batch_id: run.batch_id,
      status: 'completed',
      request_counts: { total: 25, completed: 25, failed: 0 },
      source: 'inbox/reviews/drop/reviews-1.jsonl',
      pipeline: 'drop',
      run_id: run.id,
    });
    expect(summary.usage.total_tokens).toBeGreaterThan(0);
    // The batch is the project's own, named for its pipeline and run.
    const batch = await client(service.baseURL, KEYS.reviews).batches.retrieve(run.batch_id!);
    expect(batch.metadata).toMatchObject({ job: 'reviews', pipeline: 'drop', pipeline_run: run.id });
    await expect(client(service.baseURL, KEYS.other).batches.retrieve(run.batch_id!)).rejects.toMatchObject({ status: 404 });
  });

  it('fails a run of a bad file clearly, and the next file still runs', { timeout: 180_000 }, async () => {
    await drop('broken.jsonl', 'custom_id,method,url\nreq-1,POST,/v1/chat/completions\n');
    const failed = await waitForRun('drop', (r) => r.source.endsWith('/broken.jsonl') && r.status !== 'importing');
    expect(failed.status).toBe('failed');
    expect(failed.batch_id).toBeNull();
    expect(failed.error).toEqual({ code: 'invalid_file_format', message: expect.stringContaining('is refused: The file is not JSONL') });
    expect(JSON.parse(await readOutbox(failed, 'summary.json'))).toMatchObject({ status: 'failed', error: failed.error });
    await drop('reviews-2.jsonl', chatLines(5));
    const next = await waitForRun('drop', (r) => r.source.endsWith('/reviews-2.jsonl') && r.status === 'delivered');
    expect(customIds(await readOutbox(next, 'output.jsonl'))).toHaveLength(5);
  });

  it("runs on its schedule, reading the day's file", { timeout: 180_000 }, async () => {
    const day = new Date().toISOString().slice(0, 10);
    const tomorrow = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);
    await mkdir(path.join(dataDir, 'inbox/reviews/ticker'), { recursive: true });
    for (const date of [day, tomorrow]) {
      await writeFile(
        path.join(dataDir, `inbox/reviews/ticker/${date}.jsonl`),
        `${chatLines(3)
          .map((l) => JSON.stringify(l))
          .join('\n')}\n`,
      );
    }
    const run = await waitForRun('ticker', (r) => r.status === 'delivered');
    expect(run.trigger).toBe('schedule');
    expect(run.source).toMatch(/^inbox\/reviews\/ticker\/\d{4}-\d{2}-\d{2}\.jsonl$/);
    expect(customIds(await readOutbox(run, 'output.jsonl')).sort()).toEqual(['req-1', 'req-2', 'req-3']);
    const listed = (await api('/x/pipelines')).body;
    expect(listed.data.map((p: { name: string }) => p.name)).toEqual(['drop', 'ticker']);
    const ticker = listed.data[1];
    expect(ticker).toMatchObject({ trigger: 'schedule', schedule: 'rate(4 seconds)', time_zone: 'UTC' });
    expect(ticker.next_run_at).toBeGreaterThan(Date.now() / 1000 - 1);
    expect(ticker.last_run.id).toBeDefined();
    // Later ticks find no file (each such run fails, source_not_found) rather than making batches.
    for (const date of [day, tomorrow]) await rm(path.join(dataDir, `inbox/reviews/ticker/${date}.jsonl`));
  });

  it('makes one batch of a trigger delivered twice, and none of files seen again after a restart', { timeout: 180_000 }, async () => {
    const body = JSON.stringify({ key: 'inbox/reviews/drop/reviews-2.jsonl' });
    const headers = { 'idempotency-key': 'rerun-2026-12-03' };
    const [a, b] = await Promise.all([
      api('/x/pipelines/drop/runs', { method: 'POST', body, headers }),
      api('/x/pipelines/drop/runs', { method: 'POST', body, headers }),
    ]);
    expect([a.status, b.status].sort()).toEqual([200, 201]);
    expect(a.body.id).toBe(b.body.id);
    expect(a.body.trigger).toBe('manual');
    await waitForRun('drop', (r) => r.id === a.body.id && r.status === 'delivered');

    const before = (await runs('drop')).map((r) => r.id).sort();
    const batchesBefore = (await client(service.baseURL, KEYS.reviews).batches.list({ limit: 100 })).data.length;
    service = await service.restart();
    // Every file in the folder is reported again at start; each is a repeat of its trigger.
    await drop('after-restart.jsonl', chatLines(2));
    await waitForRun('drop', (r) => r.source.endsWith('/after-restart.jsonl') && r.status === 'delivered');
    const after = (await runs('drop')).map((r) => r.id);
    expect(after.filter((id) => !before.includes(id))).toHaveLength(1);
    const dropBatches = (await client(service.baseURL, KEYS.reviews).batches.list({ limit: 100 })).data.filter(
      (batch) => batch.metadata?.pipeline === 'drop',
    );
    expect(new Set(dropBatches.map((batch) => batch.metadata?.pipeline_run)).size).toBe(dropBatches.length);
    expect(batchesBefore).toBeGreaterThan(0);
  });

  it('neither loses nor doubles a run when the process is killed while its batch runs', { timeout: 180_000 }, async () => {
    // Slow enough that the batch is still running when the process dies.
    upstream.configure({ latencyMs: 400 });
    await drop('killed.jsonl', chatLines(60));
    const running = await waitForRun('drop', (r) => r.source.endsWith('/killed.jsonl') && r.status === 'submitted');
    await service.kill9();
    upstream.configure({ latencyMs: 5 });
    service = await service.restart();
    const run = await waitForRun('drop', (r) => r.id === running.id && r.status === 'delivered');
    expect(run.batch_id).toBe(running.batch_id);
    expect((await runs('drop')).filter((r) => r.source.endsWith('/killed.jsonl'))).toHaveLength(1);
    const output = customIds(await readOutbox(run, 'output.jsonl'));
    const errors = customIds(await readOutbox(run, 'errors.jsonl'));
    expect([...output, ...errors].sort()).toEqual(
      chatLines(60)
        .map((l) => l.custom_id)
        .sort(),
    );
    expect(JSON.parse(await readOutbox(run, 'summary.json')).request_counts.total).toBe(60);
  });

  it('shows a project only its own pipelines, and answers clear errors', async () => {
    expect((await api('/x/pipelines', { key: KEYS.other })).body.data).toEqual([]);
    const foreign = await api('/x/pipelines/drop/runs', { key: KEYS.other });
    expect(foreign.status).toBe(404);
    expect(foreign.body.error).toMatchObject({ code: 'not_found', message: "No pipeline found with name 'drop'." });
    expect((await api('/x/pipelines/drop/runs', { key: KEYS.other, method: 'POST', body: '{}' })).status).toBe(404);
    const noKey = await api('/x/pipelines/drop/runs', { method: 'POST', body: '{}' });
    expect(noKey.status).toBe(400);
    expect(noKey.body.error.message).toMatch(/name the object's key/);
    const outside = await api('/x/pipelines/drop/runs', { method: 'POST', body: JSON.stringify({ key: 'inbox/other/x.jsonl' }) });
    expect(outside.status).toBe(400);
    const unknownField = await api('/x/pipelines/drop/runs', { method: 'POST', body: JSON.stringify({ file: 'x' }) });
    expect(unknownField.status).toBe(400);
    expect((await api('/x/pipelines/drop/runs/run_nope')).status).toBe(404);
  });
});
