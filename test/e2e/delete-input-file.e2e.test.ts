// Deleting a batch's input file while the batch runs: the user sees the file gone at once, the
// batch still runs every line, and the bytes go when the last batch that reads them ends.
import { access } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLines, client, collectResults, upload, waitForBatch, writeJsonl } from '../support/e2e.js';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';

const LINES = chatLines(12);

describe('deleting an input file', () => {
  let upstream: UpstreamSim;
  let service: ServiceProcess;

  beforeAll(async () => {
    upstream = await startUpstreamSim({ latencyMs: 250 });
    service = await startServiceProcess({
      env: { UPSTREAM_BASE_URL: upstream.baseURL, UPSTREAM_CONCURRENCY: '2', CHUNK_MAX_REQUESTS: '3' },
    });
  });
  afterAll(async () => {
    await service?.removeDataDir();
    await upstream?.close();
  });

  /** Whether the file's bytes are still stored (FsBlobStore keeps key `files/<id>` under DATA_DIR/blobs). */
  const blobExists = (fileId: string) =>
    access(path.join(service.dataDir, 'blobs', 'files', fileId)).then(
      () => true,
      () => false,
    );

  async function until(condition: () => Promise<boolean>, timeoutMs = 10_000) {
    const deadline = Date.now() + timeoutMs;
    while (!(await condition())) {
      if (Date.now() > deadline) throw new Error('condition not met in time');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  const createBatch = (openai: ReturnType<typeof client>, fileId: string) =>
    openai.batches.create({ input_file_id: fileId, endpoint: '/v1/chat/completions', completion_window: '24h' });

  it('keeps the bytes of a file deleted under running batches until the last one ends', async () => {
    const openai = client(service.baseURL);
    const file = await upload(openai, await writeJsonl(LINES));
    const first = await createBatch(openai, file.id);
    const second = await createBatch(openai, file.id);
    await waitForBatch(openai, first.id, (batch) => batch.status === 'in_progress');

    expect(await openai.files.delete(file.id)).toEqual({ id: file.id, object: 'file', deleted: true });
    await expect(openai.files.retrieve(file.id)).rejects.toMatchObject({ status: 404 });
    await expect(openai.files.content(file.id)).rejects.toMatchObject({ status: 404 });
    expect((await openai.files.list({ limit: 100 })).data.map((f) => f.id)).not.toContain(file.id);
    await expect(openai.files.delete(file.id)).rejects.toMatchObject({ status: 404 });
    expect(await blobExists(file.id)).toBe(true);

    // A new batch on it answers exactly as for a file that never existed.
    const refusal = async (fileId: string) => {
      const response = await fetch(`${service.baseURL}/batches`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: 'Bearer test-key' },
        body: JSON.stringify({ input_file_id: fileId, endpoint: '/v1/chat/completions', completion_window: '24h' }),
      });
      const { error } = (await response.json()) as { error: { message: string } & Record<string, unknown> };
      return { status: response.status, error: { ...error, message: error.message.replace(fileId, '<id>') } };
    };
    expect(await refusal(file.id)).toEqual(await refusal(`file-${'x'.repeat(24)}`));
    expect((await refusal(file.id)).status).toBe(404);

    for (const id of [first.id, second.id]) {
      const done = await waitForBatch(openai, id);
      expect(done.status).toBe('completed');
      expect(done.request_counts).toEqual({ total: 12, completed: 12, failed: 0 });
      const { output, ids, duplicates } = await collectResults(openai, done);
      expect(duplicates).toEqual([]);
      expect([...ids].sort()).toEqual(LINES.map((line) => line.custom_id).sort());
      expect(output).toHaveLength(12);
    }

    // The batch turns completed just before it lets go of the file.
    await until(async () => !(await blobExists(file.id)));
    await expect(openai.files.delete(file.id)).rejects.toMatchObject({ status: 404 });
    await expect(openai.files.retrieve(file.id)).rejects.toMatchObject({ status: 404 });
  });

  it('deletes the bytes at once when no unfinished batch uses the file', async () => {
    const openai = client(service.baseURL);
    const unused = await upload(openai, await writeJsonl(LINES));
    expect(await blobExists(unused.id)).toBe(true);
    expect(await openai.files.delete(unused.id)).toEqual({ id: unused.id, object: 'file', deleted: true });
    expect(await blobExists(unused.id)).toBe(false);

    const used = await upload(openai, await writeJsonl(LINES));
    const batch = await createBatch(openai, used.id);
    expect((await waitForBatch(openai, batch.id)).status).toBe('completed');
    expect(await openai.files.delete(used.id)).toEqual({ id: used.id, object: 'file', deleted: true });
    // The batch lets go of its file just after it turns completed: the bytes go then at the latest.
    await until(async () => !(await blobExists(used.id)));
    await expect(openai.files.delete(used.id)).rejects.toMatchObject({ status: 404 });
  });
});
