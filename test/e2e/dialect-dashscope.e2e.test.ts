// The DashScope seed (qwen-dashscope-batch-api.txt) with the openai SDK at /compatible-mode/v1, as
// its Python code calls it: the CSV-built input file, create with ds_name/ds_description, retrieve,
// content, the result-to-CSV reading, cancel, list with each documented filter (as the SDK's
// extra_query sends them: beside limit and after in the query string), and the dry run
// (batch-test-model on /v1/chat/ds-test), which never reaches the upstream.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, readResults, upload, waitForBatch, writeJsonl } from '../support/e2e.js';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';

const KEY = 'sk-dashscope-test';

/** The seed's input.csv → input.jsonl utility. */
function csvToRequests(rows: [string, string][], model = 'qwen-plus', url = '/v1/chat/completions') {
  return rows.map(([id, content]) => ({ custom_id: id, method: 'POST', url, body: { model, messages: [{ role: 'user', content }] } }));
}

/** The seed's get(obj, path): `obj[key] if obj and key in obj else None`, with Python's `in` (a list's values, a dict's keys). */
function seedGet(obj: any, path: (string | number)[]): any {
  for (const key of path) {
    const has = Array.isArray(obj) ? obj.includes(key) : obj && typeof obj === 'object' && key in obj;
    obj = obj && has ? obj[key] : null;
  }
  return obj;
}

/** yyyyMMddHHmmss in UTC. */
const stamp = (seconds: number) => new Date(seconds * 1000).toISOString().replace(/[-:T]/g, '').slice(0, 14);

describe('the DashScope seed against /compatible-mode/v1', () => {
  let upstream: UpstreamSim;
  let service: ServiceProcess;
  let openai: ReturnType<typeof client>;

  beforeAll(async () => {
    upstream = await startUpstreamSim({ hangRate: 0 });
    service = await startServiceProcess({
      env: { UPSTREAM_BASE_URL: upstream.baseURL, API_KEYS: `${KEY}:ds,sk-ds-lists:lists,sk-other:other` },
    });
    openai = client(`${service.origin}/compatible-mode/v1`, KEY);
  });
  afterAll(async () => {
    await service?.removeDataDir();
    await upstream?.close();
  });

  it('runs upload, create with ds_name/ds_description, retrieve and download as the seed writes them', async () => {
    const file = await upload(
      openai,
      await writeJsonl(
        csvToRequests([
          ['req-1', 'Summarize quantum computing in two sentences.'],
          ['req-2', 'What is 2+2?'],
        ]),
      ),
    );
    expect(file).toMatchObject({ purpose: 'batch', filename: 'input.jsonl' });
    const batch = await openai.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '336h' as '24h',
      metadata: { ds_name: 'My batch job', ds_description: 'Weekly report' },
    });
    const done = await waitForBatch(openai, batch.id);
    expect(done).toMatchObject({ status: 'completed', error_file_id: null, request_counts: { total: 2, completed: 2, failed: 0 } });
    const content = await openai.files.content(done.output_file_id!);
    const rows = (await content.text())
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    // The seed's result.csv columns: custom_id, status_code, content, usage.
    for (const r of rows) {
      expect(r.custom_id).toMatch(/^req-[12]$/);
      expect(seedGet(r, ['response', 'status_code'])).toBe(200);
      expect(seedGet(r, ['response', 'body', 'usage'])).toMatchObject({ total_tokens: expect.any(Number) });
      expect(r.response.body.choices[0].message.content).toEqual(expect.any(String));
    }
  });

  it('answers the dry run in-process, with DashScope test limits', async () => {
    const before = upstream.stats().requests;
    const lines = csvToRequests(
      [
        ['1', 'Hello! How can I help you?'],
        ['2', 'What is 2+2?'],
      ],
      'batch-test-model',
      '/v1/chat/ds-test',
    );
    const file = await upload(openai, await writeJsonl(lines));
    const batch = await openai.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/ds-test' as '/v1/chat/completions',
      completion_window: '24h',
    });
    const done = await waitForBatch(openai, batch.id);
    expect(done).toMatchObject({
      status: 'completed',
      endpoint: '/v1/chat/ds-test',
      model: 'batch-test-model',
      request_counts: { total: 2, completed: 2 },
    });
    const output = await readResults(openai, done.output_file_id);
    expect(output.map((line) => line.response?.body.choices[0].message.content)).toEqual([
      'This is a test response from batch-test-model.',
      'This is a test response from batch-test-model.',
    ]);
    expect(upstream.stats().requests).toBe(before);

    const tooMany = await openai.batches.create({
      input_file_id: (await upload(openai, await writeJsonl(Array.from({ length: 101 }, (_, i) => ({ ...lines[0]!, custom_id: `c${i}` })))))
        .id,
      endpoint: '/v1/chat/ds-test' as '/v1/chat/completions',
      completion_window: '24h',
    });
    expect((await waitForBatch(openai, tooMany.id)).status).toBe('failed');
    const bigLine = { ...lines[0]!, body: { ...lines[0]!.body, messages: [{ role: 'user', content: 'x'.repeat(1024 * 1024) }] } };
    const tooBig = await openai.batches.create({
      input_file_id: (await upload(openai, await writeJsonl([bigLine]))).id,
      endpoint: '/v1/chat/ds-test' as '/v1/chat/completions',
      completion_window: '24h',
    });
    const big = await waitForBatch(openai, tooBig.id);
    expect(big).toMatchObject({ status: 'failed', errors: { data: [{ code: 'file_too_large' }] } });
    const realModel = await openai.batches.create({
      input_file_id: (await upload(openai, await writeJsonl(csvToRequests([['1', 'hi']], 'qwen-plus', '/v1/chat/ds-test')))).id,
      endpoint: '/v1/chat/ds-test' as '/v1/chat/completions',
      completion_window: '24h',
    });
    const refused = await waitForBatch(openai, realModel.id);
    expect(refused).toMatchObject({ status: 'failed', errors: { data: [{ code: 'model_not_found' }] } });
    expect(upstream.stats().requests).toBe(before);
  });

  it('refuses ds_name over 100 and ds_description over 200 characters, here and not under /v1', async () => {
    const file = await upload(openai, await writeJsonl(csvToRequests([['a', 'b']], 'batch-test-model')));
    const create = (api: typeof openai, metadata: Record<string, string>) =>
      api.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h', metadata });
    await expect(create(openai, { ds_name: 'n'.repeat(101) })).rejects.toMatchObject({ status: 400, param: 'metadata.ds_name' });
    await expect(create(openai, { ds_description: 'd'.repeat(201) })).rejects.toMatchObject({
      status: 400,
      param: 'metadata.ds_description',
    });
    expect((await create(openai, { ds_name: 'n'.repeat(100), ds_description: 'd'.repeat(200) })).id).toMatch(/^batch_/);
    expect((await create(client(service.baseURL, KEY), { ds_name: 'n'.repeat(101) })).id).toMatch(/^batch_/);
  });

  it('filters the list by ds_name, input_file_ids, status and creation time, and cancels', async () => {
    const other = client(service.baseURL, 'sk-other');
    // A project of its own: the batches of the other tests are not in its lists.
    const openai = client(`${service.origin}/compatible-mode/v1`, 'sk-ds-lists');
    const lines = csvToRequests([['x', 'y']], 'batch-test-model');
    const fileA = await upload(openai, await writeJsonl(lines));
    const fileB = await upload(openai, await writeJsonl(lines));
    const make = async (fileId: string, ds_name: string) => {
      const batch = await openai.batches.create({
        input_file_id: fileId,
        endpoint: '/v1/chat/completions',
        completion_window: '24h',
        metadata: { ds_name },
      });
      return waitForBatch(openai, batch.id);
    };
    const first = await make(fileA.id, 'Nightly eval run');
    const second = await make(fileB.id, 'weekly digest');
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const third = await make(fileA.id, 'nightly eval rerun');
    const hanging = await openai.batches.create({
      input_file_id: (await upload(openai, await writeJsonl(csvToRequests([['h', 'HANG']])))).id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
      metadata: { ds_name: 'to cancel' },
    });
    upstream.configure({ hangRate: 1 });
    const cancelling = await openai.batches.cancel(hanging.id);
    expect(['cancelling', 'cancelled']).toContain(cancelling.status);
    const cancelled = await waitForBatch(openai, hanging.id);
    expect(cancelled.status).toBe('cancelled');
    upstream.configure({ hangRate: 0 });

    const ids = async (query: Record<string, string>) =>
      (await openai.batches.list({ limit: 10, ...query } as never)).data.map((b) => b.id);
    expect(await ids({ ds_name: 'eval' })).toEqual([third.id, first.id]);
    expect(await ids({ ds_name: 'Nightly' })).toEqual([first.id]);
    expect(await ids({ input_file_ids: `${fileB.id},${fileA.id}` })).toEqual([third.id, second.id, first.id]);
    expect(await ids({ status: 'cancelled,failed' })).toEqual([hanging.id]);
    expect(await ids({ create_after: stamp(third.created_at), ds_name: 'eval' })).toEqual([third.id]);
    expect(await ids({ create_before: stamp(second.created_at), input_file_ids: `${fileA.id},${fileB.id}` })).toEqual([
      second.id,
      first.id,
    ]);
    // Pages: limit and after keep working with a filter.
    const page = await openai.batches.list({ limit: 1, ds_name: 'eval' } as never);
    expect(page.data.map((b) => b.id)).toEqual([third.id]);
    expect(page.has_more).toBe(true);
    expect(await ids({ ds_name: 'eval', after: third.id })).toEqual([first.id]);
    // Another project's key sees none of them.
    expect((await other.batches.list({ limit: 10, ds_name: 'eval' } as never)).data).toEqual([]);

    for (const [query, param] of [
      [{ status: 'done' }, 'status'],
      [{ create_after: '2026-03-01' }, 'create_after'],
      [{ create_before: '20260231000000' }, 'create_before'],
      [{ input_file_ids: Array.from({ length: 21 }, (_, i) => `file-${i}`).join(',') }, 'input_file_ids'],
      [{ ds_name: 'n'.repeat(101) }, 'ds_name'],
    ] as const) {
      await expect(openai.batches.list({ limit: 10, ...query } as never)).rejects.toMatchObject({ status: 400, param });
    }
  });
});
