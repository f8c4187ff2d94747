// kill -9 of the service three times during a batch, restarting it each time: the batch completes,
// every custom_id exactly once, and thanks to the chunk checkpoints the upstream sees only the
// requests that were in flight at each crash twice (at most 1% duplicate calls).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLines, client, collectResults, submit, waitForBatch } from '../support/e2e.js';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';

describe('three crashes during one batch', () => {
  let upstream: UpstreamSim;
  let service: ServiceProcess;

  beforeAll(async () => {
    upstream = await startUpstreamSim({ latencyMs: 20 });
    service = await startServiceProcess({
      env: {
        UPSTREAM_BASE_URL: upstream.baseURL,
        UPSTREAM_CONCURRENCY: '4',
        CHUNK_MAX_REQUESTS: '200',
        LOCAL_WORKERS: '2',
        // Save finished lines as soon as the previous save is stored: a crash loses only what is in flight.
        CHECKPOINT_INTERVAL: '0ms',
      },
    });
  });
  afterAll(async () => {
    await service?.removeDataDir();
    await upstream?.close();
  });

  it('completes with every custom_id once and at most 1% duplicate upstream calls', async () => {
    const total = 4_000;
    let openai = client(service.baseURL);
    const created = await submit(openai, chatLines(total, { prefix: 'crash' }));
    const resumedLogs: string[] = [];

    for (const calls of [600, 1_600, 2_600]) {
      const deadline = Date.now() + 30_000;
      while (upstream.stats().requests < calls) {
        if (Date.now() > deadline) throw new Error(`upstream saw only ${upstream.stats().requests} calls`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      resumedLogs.push(service.logs());
      await service.kill9();
      service = await service.restart();
    }

    openai = client(service.baseURL);
    const batch = await waitForBatch(openai, created.id, undefined, 90_000);
    expect(batch.status).toBe('completed');
    expect(batch.request_counts).toEqual({ total, completed: total, failed: 0 });
    const { output, errors, ids, duplicates } = await collectResults(openai, batch);
    expect(duplicates).toEqual([]);
    expect(errors).toEqual([]);
    expect(output).toHaveLength(total);
    expect(ids.size).toBe(total);

    const calls = upstream.stats().callsByCustomKey;
    expect(calls.size).toBe(total);
    const duplicateCalls = [...calls.values()].reduce((sum, n) => sum + n - 1, 0);
    expect(duplicateCalls / total).toBeLessThanOrEqual(0.01);
    // The restarts resumed chunks from their checkpoints.
    expect([...resumedLogs, service.logs()].join('')).toContain('chunk resumed from checkpoints');
    console.info(`crash test: ${duplicateCalls} duplicate upstream calls of ${total} requests across 3 kill -9s`);
  }, 120_000);
});
