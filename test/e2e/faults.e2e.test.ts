// A misbehaving upstream: rate limits with Retry-After, server errors, connection resets and hangs
// past the request timeout are retried until every line has its answer; an upstream that refuses
// everything for the whole window ends the batch expired with every line accounted for.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLines, client, collectResults, submit, waitForBatch } from '../support/e2e.js';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';

describe('a misbehaving upstream', () => {
  let upstream: UpstreamSim;
  let service: ServiceProcess;

  beforeAll(async () => {
    upstream = await startUpstreamSim({ latencyMs: 5, seed: 4 });
    service = await startServiceProcess({
      env: {
        UPSTREAM_BASE_URL: upstream.baseURL,
        UPSTREAM_CONCURRENCY: '64',
        // A hang costs one timeout; a 500 or a reset a short backoff; a 429 its Retry-After (1 s).
        UPSTREAM_TIMEOUT: '1s',
        UPSTREAM_BACKOFF_BASE: '20ms',
        UPSTREAM_MAX_ATTEMPTS: '10',
        MIN_COMPLETION_WINDOW: '3s',
        CHUNK_MAX_REQUESTS: '250',
      },
    });
  });
  afterAll(async () => {
    await service?.removeDataDir();
    await upstream?.close();
  });

  it('answers all 3,000 lines through 10% 429s, 5% 500s, 2% resets and 1% hangs: each once, no error line', async () => {
    upstream.configure({ rateLimitRate: 0.1, retryAfterSeconds: 1, failRate: 0.05, resetRate: 0.02, hangRate: 0.01 });
    upstream.reset();
    const openai = client(service.baseURL);
    const total = 3_000;
    const created = await submit(openai, chatLines(total, { prefix: 'faulty' }));
    const batch = await waitForBatch(openai, created.id, undefined, 80_000);

    expect(batch.status).toBe('completed');
    expect(batch.request_counts).toEqual({ total, completed: total, failed: 0 });
    const { output, errors, ids, duplicates } = await collectResults(openai, batch);
    expect(duplicates).toEqual([]);
    expect(errors).toEqual([]);
    expect(output).toHaveLength(total);
    expect(ids.size).toBe(total);
    expect(output.every((line) => line.response?.status_code === 200)).toBe(true);
    // Every fault was met, and retried.
    const stats = upstream.stats();
    expect(stats.byStatus['200']).toBe(total);
    for (const fault of ['429', '500', 'reset', 'hang']) expect(stats.byStatus[fault] ?? 0).toBeGreaterThan(0);
  }, 90_000);

  it('ends expired, every line accounted for, when the upstream refuses everything for the whole window', async () => {
    upstream.configure({ rateLimitRate: 1, retryAfterSeconds: 1, failRate: 0, resetRate: 0, hangRate: 0 });
    upstream.reset();
    const openai = client(service.baseURL);
    const total = 200;
    const created = await submit(openai, chatLines(total, { prefix: 'refused' }), { window: '3s' });
    const batch = await waitForBatch(openai, created.id, undefined, 20_000);
    upstream.configure({ rateLimitRate: 0 });

    expect(batch.status).toBe('expired');
    expect(batch.request_counts).toEqual({ total, completed: 0, failed: total });
    const { output, errors, ids, duplicates } = await collectResults(openai, batch);
    expect(duplicates).toEqual([]);
    expect(output).toEqual([]);
    expect(ids.size).toBe(total);
    expect(errors.every((line) => line.error?.code === 'batch_expired')).toBe(true);
    // Those that were tried keep the upstream's last answer; those that never got a turn have none.
    const tried = errors.filter((line) => line.response !== null);
    expect(tried.length).toBeGreaterThan(0);
    for (const line of tried) expect(line.response).toMatchObject({ status_code: 429, body: { error: { code: 'rate_limit_exceeded' } } });
    expect(upstream.stats().byStatus['200']).toBeUndefined();
  });
});
