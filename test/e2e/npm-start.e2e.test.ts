// `npm start` runs a bundle of local/main.ts under plain node (less memory than tsx); the other
// end-to-end tests run the source. This one runs the bundle, built by the same script, through a
// batch with the openai SDK.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLines, client, submit, waitForBatch } from '../support/e2e.js';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';

describe('the service as npm start runs it', () => {
  let service: ServiceProcess;

  beforeAll(async () => {
    service = await startServiceProcess({ asNpmStart: true });
  }, 60_000);
  afterAll(async () => {
    await service?.removeDataDir();
  });

  it('runs a batch end to end', async () => {
    const openai = client(service.baseURL, 'any-key');
    const created = await submit(openai, chatLines(5, { model: 'batch-test-model' }));
    const batch = await waitForBatch(openai, created.id);
    expect(batch.status).toBe('completed');
    expect(batch.request_counts).toEqual({ total: 5, completed: 5, failed: 0 });
    const output = await (await openai.files.content(batch.output_file_id!)).text();
    const ids = output
      .trim()
      .split('\n')
      .map((line) => (JSON.parse(line) as { custom_id: string }).custom_id);
    expect(ids.sort()).toEqual(['req-1', 'req-2', 'req-3', 'req-4', 'req-5']);
  });
});
