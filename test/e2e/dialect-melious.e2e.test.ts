// The Melious seed's script (melious-batch-workflow.txt), driven as written against /melious/v1:
// its exact HTTP calls (httpx: a multipart upload named requests.jsonl, JSON create, polls, the
// content download), and its logic: the terminal states, request_counts['succeeded'] over
// sum(request_counts.values()), `status != "succeeded"` raising, and the one-file parse.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';

const KEY = 'sk-mel-test';
const HEAD = { Authorization: `Bearer ${KEY}` };

/** The seed's run_batch, line by line (polling every 100 ms instead of 30 s). */
async function runBatch(api: string, prompts: Record<string, string>, model = 'glm-4.7:batch') {
  const lines = Object.entries(prompts).map(([cid, prompt]) =>
    JSON.stringify({
      custom_id: cid,
      method: 'POST',
      url: '/v1/chat/completions',
      body: { model, messages: [{ role: 'user', content: prompt }] },
    }),
  );
  const jsonl = lines.join('\n');
  const form = new FormData();
  form.append('file', new Blob([jsonl], { type: 'application/jsonl' }), 'requests.jsonl');
  form.append('purpose', 'batch');
  const upload = await (await fetch(`${api}/files`, { method: 'POST', headers: HEAD, body: form })).json();
  const inputFileId = upload.id;
  const batch = await (
    await fetch(`${api}/batches`, {
      method: 'POST',
      headers: { ...HEAD, 'Content-Type': 'application/json' },
      body: JSON.stringify({ input_file_id: inputFileId, endpoint: '/v1/chat/completions', completion_window: '24h' }),
    })
  ).json();
  const polls: any[] = [];
  let status: any;
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    status = await (await fetch(`${api}/batches/${batch.id}`, { headers: HEAD })).json();
    polls.push(status);
    // The seed prints request_counts['succeeded'] over the sum of the counts: a KeyError without `succeeded`.
    if (typeof status.request_counts.succeeded !== 'number') throw new Error("KeyError: 'succeeded'");
    if (['succeeded', 'failed', 'expired', 'cancelled'].includes(status.status)) break;
  }
  if (status.status !== 'succeeded') throw new Error(`batch ended in status ${status.status}`);
  const body = await (await fetch(`${api}/files/${status.output_file_id}/content`, { headers: HEAD })).text();
  const results: Record<string, string> = {};
  const entries: any[] = [];
  for (const line of body.trim().split('\n')) {
    const entry = JSON.parse(line);
    entries.push(entry);
    if (entry.error) results[entry.custom_id] = `ERROR: ${entry.error.message}`;
    else results[entry.custom_id] = entry.response.body.choices[0].message.content;
  }
  return { results, status, polls, entries };
}

describe('the Melious seed script against /melious/v1', () => {
  let upstream: UpstreamSim;
  let service: ServiceProcess;
  let api: string;

  beforeAll(async () => {
    upstream = await startUpstreamSim({
      failWhen: (_body, { key }) =>
        key.includes('REFUSE')
          ? { status: 400, body: { error: { message: 'content policy', type: 'invalid_request_error', code: 'INFERENCE_3103' } } }
          : undefined,
    });
    service = await startServiceProcess({ env: { UPSTREAM_BASE_URL: upstream.baseURL, API_KEYS: `${KEY}:mel` } });
    api = `${service.origin}/melious/v1`;
  });
  afterAll(async () => {
    await service?.removeDataDir();
    await upstream?.close();
  });

  it('runs the seed main: ten prompts, every answer by custom_id', async () => {
    const prompts = Object.fromEntries(
      Array.from({ length: 10 }, (_, i) => [`q${i}`, `In one sentence, why did Hanseatic city #${i} matter?`]),
    );
    const { results, status, polls } = await runBatch(api, prompts);
    expect(Object.keys(results).sort()).toEqual(Object.keys(prompts).sort());
    for (const text of Object.values(results)) expect(text).not.toMatch(/^ERROR/);
    expect(status).toMatchObject({ status: 'succeeded', error_file_id: null, request_counts: { succeeded: 10, failed: 0, pending: 0 } });
    expect(status.request_counts).not.toHaveProperty('total');
    // The seed's progress line: the counts' values add up to the batch's size on every poll once validated.
    for (const poll of polls.filter((p) => p.status !== 'validating')) {
      expect(Object.values(poll.request_counts as Record<string, number>).reduce((a, b) => a + b, 0)).toBe(10);
    }
    // The :batch flavor reached the upstream that serves the model.
    expect(upstream.stats().requests).toBeGreaterThanOrEqual(10);
  });

  it('puts failed rows in the one output file with error set (code and message), the upstream answer kept', async () => {
    const { results, status, entries } = await runBatch(api, { ok1: 'fine', bad: 'REFUSE this', ok2: 'also fine' });
    expect(status).toMatchObject({ status: 'succeeded', request_counts: { succeeded: 2, failed: 1, pending: 0 }, error_file_id: null });
    expect(results.bad).toBe('ERROR: content policy');
    expect(results.ok1).toMatch(/.+/);
    const bad = entries.find((e) => e.custom_id === 'bad');
    expect(bad.error).toEqual({ code: 'INFERENCE_3103', message: 'content policy' });
    expect(bad.response.status_code).toBe(400);
    // The seed's retry logic reads error.code.
    expect(['INFERENCE_3103', 'INFERENCE_3107', 'INFERENCE_3108'].includes(bad.error.code)).toBe(true);
  });

  it('gives an all-failed batch an output file too (no /files/None/content)', async () => {
    const { results, status } = await runBatch(api, { a: 'REFUSE a', b: 'REFUSE b' });
    expect(status.output_file_id).toMatch(/^file-/);
    expect(status.request_counts).toEqual({ succeeded: 0, failed: 2, pending: 0 });
    expect(results).toEqual({ a: 'ERROR: content policy', b: 'ERROR: content policy' });
  });

  it('answers the same batch in OpenAI words under /v1', async () => {
    const { status } = await runBatch(api, { x: 'hello' });
    const openai = await (await fetch(`${service.baseURL}/batches/${status.id}`, { headers: HEAD })).json();
    expect(openai).toMatchObject({ status: 'completed', request_counts: { total: 1, completed: 1, failed: 0 } });
  });
});
