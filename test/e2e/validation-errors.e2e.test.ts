// A file with more errors than a batch object carries, through the official openai SDK against
// `npm start`: errors.data holds the errors that fit (bounded by bytes, so the batch's DynamoDB
// item stays small), ending with a notice of how many there are; the error file holds them all.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLine, client, submit, waitForBatch } from '../support/e2e.js';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';

describe('validation errors beyond what a batch object holds', () => {
  let upstream: UpstreamSim;
  let service: ServiceProcess;

  beforeAll(async () => {
    upstream = await startUpstreamSim({ latencyMs: 5 });
    service = await startServiceProcess({ env: { UPSTREAM_BASE_URL: upstream.baseURL } });
  });
  afterAll(async () => {
    await service?.removeDataDir();
    await upstream?.close();
  });

  it('lists the first errors and a notice, puts all 1,000 in the error file, and sends nothing upstream', async () => {
    const openai = client(service.baseURL);
    const lines = [
      chatLine('first', 'hello', '通义千问超大规模语言模型'.repeat(12)),
      ...Array.from({ length: 1_000 }, (_, i) => chatLine(`r${i}`, 'hello', `深度求索推理模型第${i}版😀`.repeat(8))),
    ];
    const created = await submit(openai, lines);
    const batch = await waitForBatch(openai, created.id);
    expect(batch.status).toBe('failed');
    expect(batch.output_file_id).toBeNull();
    expect(batch.error_file_id).toBeTruthy();

    const data = batch.errors!.data!;
    const listed = data.slice(0, -1);
    expect(listed.length).toBeGreaterThan(50);
    expect(listed.length).toBeLessThan(1_000);
    for (const [i, error] of listed.entries()) {
      expect(error).toMatchObject({ line: i + 2, code: 'model_mismatch', param: 'body.model' });
      expect(error.message).toMatch(new RegExp(`^Line ${i + 2}: model "`));
      expect(error.message).not.toContain('\uFFFD');
    }
    expect(data.at(-1)).toEqual({
      code: 'too_many_errors',
      message: `The file has 1,000 errors: the first ${listed.length} are listed here; all 1,000 are in the error file ${batch.error_file_id} (error_file_id).`,
      param: null,
      line: null,
    });

    const text = await (await openai.files.content(batch.error_file_id!)).text();
    const filed = text
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    expect(filed.map((error) => error.line)).toEqual(Array.from({ length: 1_000 }, (_, i) => i + 2));
    expect(filed.slice(0, listed.length)).toEqual(listed);
    expect((await openai.files.retrieve(batch.error_file_id!)).purpose).toBe('batch_output');
    expect(upstream.stats().requests).toBe(0);
  });
});
