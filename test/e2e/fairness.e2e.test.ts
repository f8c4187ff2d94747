// Fair sharing between projects: a small batch of project B behind a big one of project A finishes
// in about its time alone (it does not wait for A's backlog), and two equal batches of two projects
// progress at about the same rate. Asserted on ordering and progress, not on wall-clock tightness:
// the machine is shared and noisy.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLines, client, submit, TERMINAL, upload, waitForBatch, writeJsonl } from '../support/e2e.js';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';

describe('fair sharing between projects', () => {
  let upstream: UpstreamSim;
  let service: ServiceProcess;

  beforeAll(async () => {
    upstream = await startUpstreamSim({ latencyMs: 50 });
    service = await startServiceProcess({
      env: {
        UPSTREAM_BASE_URL: upstream.baseURL,
        UPSTREAM_CONCURRENCY: '16',
        CHUNK_MAX_REQUESTS: '100',
        API_KEYS: 'key-a:team-a,key-b:team-b',
      },
    });
  });
  afterAll(async () => {
    await service?.removeDataDir();
    await upstream?.close();
  });

  it("runs project B's small batch beside project A's big one, not after it", async () => {
    const a = client(service.baseURL, 'key-a');
    const b = client(service.baseURL, 'key-b');

    let started = Date.now();
    const alone = await submit(b, chatLines(20, { prefix: 'alone' }));
    expect((await waitForBatch(b, alone.id)).status).toBe('completed');
    const aloneMs = Date.now() - started;

    const big = await submit(a, chatLines(2_000, { prefix: 'big' }));
    await waitForBatch(a, big.id, (batch) => (batch.request_counts?.completed ?? 0) >= 200);
    started = Date.now();
    const small = await submit(b, chatLines(20, { prefix: 'small' }));
    const done = await waitForBatch(b, small.id, undefined, 120_000);
    const behindMs = Date.now() - started;
    const bigThen = await a.batches.retrieve(big.id);

    expect(done.status).toBe('completed');
    expect(done.request_counts).toEqual({ total: 20, completed: 20, failed: 0 });
    // B did not wait for A's backlog: A is far from done when B ends.
    expect(bigThen.status).toBe('in_progress');
    expect(bigThen.request_counts!.completed).toBeLessThan(1_500);
    console.log(
      `small batch alone ${aloneMs} ms, behind 2,000 lines of another project ${behindMs} ms (ratio ${(behindMs / aloneMs).toFixed(2)})`,
    );
    expect((await waitForBatch(a, big.id, undefined, 120_000)).status).toBe('completed');
  }, 180_000);

  it('moves two equal batches of two projects at about the same rate', async () => {
    const a = client(service.baseURL, 'key-a');
    const b = client(service.baseURL, 'key-b');
    const [first, second] = await Promise.all([
      submit(a, chatLines(800, { prefix: 'even a' })),
      submit(b, chatLines(800, { prefix: 'even b' })),
    ]);
    const deadline = Date.now() + 120_000;
    for (;;) {
      const [x, y] = await Promise.all([a.batches.retrieve(first.id), b.batches.retrieve(second.id)]);
      const cx = x.request_counts?.completed ?? 0;
      const cy = y.request_counts?.completed ?? 0;
      if (TERMINAL.includes(x.status) || TERMINAL.includes(y.status)) {
        // When the first ends, the other is most of the way too.
        expect(Math.min(cx, cy)).toBeGreaterThanOrEqual(0.6 * 800);
        break;
      }
      // Chunks are recorded whole (100 lines): neither runs ahead by much while both run.
      if (cx + cy >= 400) expect(Math.abs(cx - cy)).toBeLessThanOrEqual(400);
      if (Date.now() > deadline) throw new Error(`still running: ${cx} and ${cy} done`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await waitForBatch(a, first.id, undefined, 60_000);
    await waitForBatch(b, second.id, undefined, 60_000);
  }, 180_000);

  it('takes x_priority (a field, or metadata for SDKs that send no extra fields) and refuses any other value', async () => {
    const a = client(service.baseURL, 'key-a');
    const input = await upload(a, await writeJsonl(chatLines(2)));
    const base = { input_file_id: input.id, endpoint: '/v1/chat/completions' as const, completion_window: '24h' as const };
    const high = await a.batches.create({ ...base, x_priority: 'high' } as typeof base);
    expect(high).toMatchObject({ x_priority: 'high' });
    const low = await a.batches.create({ ...base, metadata: { x_priority: 'low' } });
    expect(low).toMatchObject({ x_priority: 'low' });
    const normal = await a.batches.create(base);
    expect(normal).not.toHaveProperty('x_priority');
    await expect(a.batches.create({ ...base, metadata: { x_priority: 'urgent' } })).rejects.toMatchObject({
      status: 400,
      error: { param: 'metadata.x_priority' },
    });
    await expect(a.batches.create({ ...base, x_priority: 'now' } as typeof base)).rejects.toMatchObject({ status: 400 });
    for (const batch of [high, low, normal]) expect((await waitForBatch(a, batch.id)).status).toBe('completed');
  });
});
