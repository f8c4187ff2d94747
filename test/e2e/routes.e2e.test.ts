// Upstream routes from UPSTREAM_ROUTES: a model pattern goes to its own upstream with its own key
// (named by env:NAME), and every batch on the route shares its limits: two batches at once on a
// route with maxConcurrency 10 never put more than 10 requests in flight upstream.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLines, client, collectResults, submit, waitForBatch } from '../support/e2e.js';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';

describe('upstream routes', () => {
  let routed: UpstreamSim;
  let fallback: UpstreamSim;
  let service: ServiceProcess;
  let dir: string;

  beforeAll(async () => {
    // The routed upstream answers 429 to anything beyond 10 in flight, and wants the route's key.
    routed = await startUpstreamSim({ latencyMs: 30, maxConcurrency: 10, requireApiKey: 'sk-route-key' });
    fallback = await startUpstreamSim({ latencyMs: 5 });
    dir = await mkdtemp(path.join(os.tmpdir(), 'routes-'));
    const routesFile = path.join(dir, 'routes.json');
    await writeFile(
      routesFile,
      JSON.stringify({
        'shared-*': { baseUrl: routed.baseURL, apiKeySecret: 'env:ROUTE_KEY', maxConcurrency: 10, requestsPerMinute: 60_000 },
      }),
    );
    service = await startServiceProcess({
      env: {
        UPSTREAM_BASE_URL: fallback.baseURL,
        UPSTREAM_CONCURRENCY: '64',
        UPSTREAM_ROUTES: routesFile,
        ROUTE_KEY: 'sk-route-key',
        CHUNK_MAX_REQUESTS: '50',
        LOCAL_WORKERS: '8',
      },
    });
  });
  afterAll(async () => {
    await service?.removeDataDir();
    await routed?.close();
    await fallback?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('runs two batches at once on one route within its maxConcurrency of 10', async () => {
    const openai = client(service.baseURL);
    const [a, b] = await Promise.all([
      submit(openai, chatLines(300, { prefix: 'first', model: 'shared-a' })),
      submit(openai, chatLines(300, { prefix: 'second', model: 'shared-b' })),
    ]);
    const batches = await Promise.all([waitForBatch(openai, a.id), waitForBatch(openai, b.id)]);
    for (const batch of batches) {
      expect(batch.status).toBe('completed');
      expect(batch.request_counts).toEqual({ total: 300, completed: 300, failed: 0 });
      const { ids, duplicates, errors } = await collectResults(openai, batch);
      expect(ids.size).toBe(300);
      expect(duplicates).toEqual([]);
      expect(errors).toEqual([]);
    }
    const stats = routed.stats();
    expect(stats.peakInFlight).toBeLessThanOrEqual(10);
    expect(stats.peakInFlight).toBeGreaterThanOrEqual(8);
    // Never over the limit: the upstream never had to refuse, and had the route's key every time.
    expect(stats.byStatus).toEqual({ '200': 600 });
    expect(fallback.stats().requests).toBe(0);
  });

  it('sends models no route matches to the default upstream', async () => {
    const openai = client(service.baseURL);
    const batch = await waitForBatch(openai, (await submit(openai, chatLines(20, { model: 'other-model' }))).id);
    expect(batch.request_counts).toEqual({ total: 20, completed: 20, failed: 0 });
    expect(fallback.stats().byStatus).toEqual({ '200': 20 });
  });
});
