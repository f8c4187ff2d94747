// The API surface a client sees: listing and pagination, deletion, projects that cannot see each
// other, and clear errors in the OpenAI envelope for every client mistake.

import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLines, client, submit, upload, waitForBatch, writeJsonl } from '../support/e2e.js';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';

const TEST_LINES = chatLines(3, { model: 'batch-test-model' });

describe('the API', () => {
  let service: ServiceProcess;
  let alice: OpenAI;
  let bob: OpenAI;

  beforeAll(async () => {
    service = await startServiceProcess({ env: { API_KEYS: 'alice-key:alpha, bob-key:beta', MAX_FILE_BYTES: '100000' } });
    alice = client(service.baseURL, 'alice-key');
    bob = client(service.baseURL, 'bob-key');
  });
  afterAll(async () => {
    await service?.removeDataDir();
  });

  it('lists batches newest first and pages through them with after', async () => {
    const created: string[] = [];
    for (let i = 0; i < 5; i++) created.push((await submit(alice, TEST_LINES, { metadata: { n: String(i) } })).id);
    const newestFirst = [...created].reverse();

    const first = await alice.batches.list({ limit: 2 });
    expect(first.data.map((b) => b.id)).toEqual(newestFirst.slice(0, 2));
    expect(first.has_more).toBe(true);

    const all: string[] = [];
    for await (const batch of alice.batches.list({ limit: 2 })) all.push(batch.id);
    expect(all).toEqual(newestFirst);

    const raw = await fetch(`${service.baseURL}/batches?limit=2&after=${newestFirst[3]}`, {
      headers: { authorization: 'Bearer alice-key' },
    });
    const page = (await raw.json()) as { object: string; data: { id: string }[]; first_id: string; last_id: string; has_more: boolean };
    expect(page).toMatchObject({ object: 'list', first_id: newestFirst[4], last_id: newestFirst[4], has_more: false });
    for (const id of created) await waitForBatch(alice, id);
  });

  it('lists files with purpose, order and after', async () => {
    const uploaded: string[] = [];
    for (let i = 0; i < 3; i++) uploaded.push((await upload(alice, await writeJsonl(TEST_LINES, `f${i}.jsonl`))).id);
    const listed = await alice.files.list({ purpose: 'batch', limit: 100 });
    const ids = listed.data.map((f) => f.id);
    expect(ids.slice(0, 3)).toEqual([...uploaded].reverse());
    expect(listed.data.every((f) => f.purpose === 'batch')).toBe(true);

    const ascending = await alice.files.list({ order: 'asc', limit: 100 });
    const ascendingIds = ascending.data.map((f) => f.id);
    expect(ascendingIds.indexOf(uploaded[0]!)).toBeLessThan(ascendingIds.indexOf(uploaded[2]!));

    const outputs = await alice.files.list({ purpose: 'batch_output' });
    expect(outputs.data.length).toBeGreaterThan(0);
    expect(outputs.data.every((f) => f.purpose === 'batch_output')).toBe(true);
  });

  it('deletes a file: it is gone from retrieve, content and list', async () => {
    const file = await upload(alice, await writeJsonl(TEST_LINES));
    expect(await alice.files.delete(file.id)).toEqual({ id: file.id, object: 'file', deleted: true });
    await expect(alice.files.retrieve(file.id)).rejects.toMatchObject({ status: 404 });
    await expect(alice.files.content(file.id)).rejects.toMatchObject({ status: 404 });
    await expect(alice.files.delete(file.id)).rejects.toMatchObject({ status: 404 });
    const listed = await alice.files.list({ limit: 100 });
    expect(listed.data.map((f) => f.id)).not.toContain(file.id);
  });

  it("keeps projects apart: another project's ids answer 404 and never appear in lists", async () => {
    const file = await upload(alice, await writeJsonl(TEST_LINES));
    const batch = await alice.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
    const done = await waitForBatch(alice, batch.id);

    await expect(bob.files.retrieve(file.id)).rejects.toMatchObject({ status: 404 });
    await expect(bob.files.content(done.output_file_id!)).rejects.toMatchObject({ status: 404 });
    await expect(bob.files.delete(file.id)).rejects.toMatchObject({ status: 404 });
    await expect(bob.batches.retrieve(batch.id)).rejects.toMatchObject({ status: 404 });
    await expect(bob.batches.cancel(batch.id)).rejects.toMatchObject({ status: 404 });
    await expect(
      bob.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' }),
    ).rejects.toMatchObject({ status: 404, error: { param: 'input_file_id' } });
    expect((await bob.batches.list()).data).toEqual([]);
    expect((await bob.files.list()).data).toEqual([]);

    // The same 404 as for an id that never existed.
    const missing = await fetch(`${service.baseURL}/batches/batch_doesnotexist`, { headers: { authorization: 'Bearer bob-key' } });
    const foreign = await fetch(`${service.baseURL}/batches/${batch.id}`, { headers: { authorization: 'Bearer bob-key' } });
    expect(foreign.status).toBe(missing.status);
    expect(((await foreign.json()) as { error: { code: string } }).error.code).toBe(
      ((await missing.json()) as { error: { code: string } }).error.code,
    );
  });

  it('answers 401 without a key or with an unknown one, without echoing the key', async () => {
    const none = await fetch(`${service.baseURL}/batches`);
    expect(none.status).toBe(401);
    expect(await none.json()).toMatchObject({ error: { type: 'invalid_request_error', code: 'missing_api_key', param: null } });
    await expect(client(service.baseURL, 'sk-wrong-secret').batches.list()).rejects.toMatchObject({ status: 401 });
    const wrong = await fetch(`${service.baseURL}/files`, { headers: { authorization: 'Bearer sk-wrong-secret' } });
    expect(await wrong.text()).not.toContain('sk-wrong-secret');
  });

  it('rejects bad requests with the error envelope and creates nothing', async () => {
    const file = await upload(alice, await writeJsonl(TEST_LINES));
    const before = (await alice.batches.list({ limit: 100 })).data.length;
    const cases: [Record<string, unknown>, string][] = [
      [{ endpoint: '/v1/chat/completions', completion_window: '24h' }, 'input_file_id'],
      [{ input_file_id: file.id, endpoint: '/v1/unknown', completion_window: '24h' }, 'endpoint'],
      [{ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '2d' }, 'completion_window'],
      [{ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '1h' }, 'completion_window'],
      [{ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '337h' }, 'completion_window'],
      [
        {
          input_file_id: file.id,
          endpoint: '/v1/chat/completions',
          completion_window: '24h',
          metadata: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v'])),
        },
        'metadata',
      ],
      [
        { input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h', metadata: { k: 'x'.repeat(513) } },
        'metadata.k',
      ],
      [
        {
          input_file_id: file.id,
          endpoint: '/v1/chat/completions',
          completion_window: '24h',
          output_expires_after: { anchor: 'created_at', seconds: 60 },
        },
        'output_expires_after.seconds',
      ],
    ];
    for (const [body, param] of cases) {
      const response = await fetch(`${service.baseURL}/batches`, {
        method: 'POST',
        headers: { authorization: 'Bearer alice-key', 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      expect(response.status, JSON.stringify(body)).toBe(400);
      const envelope = (await response.json()) as { error: Record<string, unknown> };
      expect(Object.keys(envelope.error).sort()).toEqual(['code', 'message', 'param', 'type']);
      expect(envelope.error.param, JSON.stringify(body)).toBe(param);
      expect(envelope.error.message).not.toMatch(/at .*\.ts:\d+/);
    }
    const notJson = await fetch(`${service.baseURL}/batches`, {
      method: 'POST',
      headers: { authorization: 'Bearer alice-key', 'content-type': 'application/json' },
      body: '{"input_file_id": ',
    });
    expect(notJson.status).toBe(400);
    expect(((await notJson.json()) as { error: { code: string } }).error.code).toBe('invalid_json');
    expect((await alice.batches.list({ limit: 100 })).data.length).toBe(before);
  });

  it('rejects bad uploads clearly', async () => {
    const form = (fields: Record<string, string>, file?: string) => {
      const data = new FormData();
      for (const [k, v] of Object.entries(fields)) data.set(k, v);
      if (file !== undefined) data.set('file', new Blob([file]), 'input.jsonl');
      return fetch(`${service.baseURL}/files`, { method: 'POST', headers: { authorization: 'Bearer alice-key' }, body: data });
    };
    const cases: [Response, number, string | null][] = [
      [await form({ purpose: 'batch' }), 400, 'file'],
      [await form({}, '{"a":1}\n'), 400, 'purpose'],
      [await form({ purpose: 'fine-tune' }, '{"a":1}\n'), 400, 'purpose'],
      [await form({ purpose: 'batch' }, ''), 400, 'file'],
      [
        await form({ purpose: 'batch', 'expires_after[anchor]': 'created_at', 'expires_after[seconds]': '10' }, '{"a":1}\n'),
        400,
        'expires_after.seconds',
      ],
    ];
    for (const [response, status, param] of cases) {
      expect(response.status).toBe(status);
      expect(((await response.json()) as { error: { param: string | null } }).error.param).toBe(param);
    }
    const tooBig = await form({ purpose: 'batch' }, 'x'.repeat(100_001));
    expect(tooBig.status).toBe(413);
    expect(((await tooBig.json()) as { error: { code: string } }).error.code).toBe('file_too_large');
    const json = await fetch(`${service.baseURL}/files`, {
      method: 'POST',
      headers: { authorization: 'Bearer alice-key', 'content-type': 'application/json' },
      body: '{}',
    });
    expect(json.status).toBe(400);
  });

  it('honours expires_after on upload', async () => {
    const file = await alice.files.create({
      file: new File([TEST_LINES.map((l) => JSON.stringify(l)).join('\n')], 'short.jsonl'),
      purpose: 'batch',
      expires_after: { anchor: 'created_at', seconds: 3600 },
    });
    expect(file.expires_at! - file.created_at).toBe(3600);
  });

  it('answers unknown routes with a 404 envelope and /healthz with 200', async () => {
    const unknown = await fetch(`${service.baseURL}/nothing-here`, { headers: { authorization: 'Bearer alice-key' } });
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ error: { type: 'invalid_request_error' } });
    expect((await fetch(`${service.origin}/healthz`)).status).toBe(200);
  });
});
