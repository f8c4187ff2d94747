// State survives a restart: a batch that was running when the process died carries on when it
// starts again, and still ends with every custom_id exactly once.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLines, client, collectResults, submit, waitForBatch } from '../support/e2e.js';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';

describe('a restart in the middle of a batch', () => {
  let upstream: UpstreamSim;
  let service: ServiceProcess;

  beforeAll(async () => {
    upstream = await startUpstreamSim({ latencyMs: 50 });
    service = await startServiceProcess({
      env: { UPSTREAM_BASE_URL: upstream.baseURL, UPSTREAM_CONCURRENCY: '8', CHUNK_MAX_REQUESTS: '20', LOCAL_WORKERS: '2' },
    });
  });
  afterAll(async () => {
    await service?.removeDataDir();
    await upstream?.close();
  });

  it('carries on after kill -9 and loses nothing', async () => {
    const total = 300;
    let openai = client(service.baseURL);
    const created = await submit(openai, chatLines(total));
    await waitForBatch(openai, created.id, (b) => b.request_counts!.completed >= 40);

    await service.kill9();
    const callsBeforeKill = upstream.stats().requests;
    service = await service.restart();
    openai = client(service.baseURL);

    const batch = await waitForBatch(openai, created.id);
    expect(batch.status).toBe('completed');
    expect(batch.request_counts).toEqual({ total, completed: total, failed: 0 });
    const { output, errors, ids, duplicates } = await collectResults(openai, batch);
    expect(duplicates).toEqual([]);
    expect(errors).toEqual([]);
    expect(output).toHaveLength(total);
    expect(ids.size).toBe(total);
    expect(callsBeforeKill).toBeLessThan(total);
    expect(service.logs()).toContain('resumed unfinished batches');
  });

  it('finishes a batch whose process was killed right after it was created', async () => {
    const openai = client(service.baseURL);
    const created = await submit(openai, chatLines(50, { model: 'batch-test-model' }));
    await service.kill9();
    service = await service.restart();
    const batch = await waitForBatch(client(service.baseURL), created.id);
    expect(batch.status).toBe('completed');
    expect(batch.request_counts).toEqual({ total: 50, completed: 50, failed: 0 });
  });
});
