// kill -9 of the service three times during a batch, restarting it each time: the batch completes,
// every custom_id exactly once, and with the default checkpoint cadence (a checkpoint once half as
// many lines wait as the chunk has requests in flight) a crash costs at most about twice what was
// in flight: 3 crashes with 16 in flight redo at most 96 upstream calls (the floor is 48).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLines, client, collectResults, submit, waitForBatch } from '../support/e2e.js';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';

const IN_FLIGHT = 16;
const CRASHES = [600, 1_600, 2_600];

describe('three crashes during one batch', () => {
  let upstream: UpstreamSim;
  let service: ServiceProcess;

  beforeAll(async () => {
    upstream = await startUpstreamSim({ latencyMs: 20 });
    service = await startServiceProcess({
      env: {
        UPSTREAM_BASE_URL: upstream.baseURL,
        UPSTREAM_CONCURRENCY: String(IN_FLIGHT),
        CHUNK_MAX_REQUESTS: '200',
        LOCAL_WORKERS: '2',
        // The checkpoint settings are left at their defaults: they are what is measured.
      },
    });
  });
  afterAll(async () => {
    await service?.removeDataDir();
    await upstream?.close();
  });

  it('completes with every custom_id once, redoing at most twice what was in flight at the crashes', async () => {
    const total = 4_000;
    let openai = client(service.baseURL);
    const created = await submit(openai, chatLines(total, { prefix: 'crash' }));
    const resumedLogs: string[] = [];
    let inFlightAtCrashes = 0;

    for (const calls of CRASHES) {
      const deadline = Date.now() + 30_000;
      while (upstream.stats().requests < calls) {
        if (Date.now() > deadline) throw new Error(`upstream saw only ${upstream.stats().requests} calls`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      resumedLogs.push(service.logs());
      inFlightAtCrashes += upstream.stats().inFlight;
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
    // The floor is what was on the wire at each crash (at most IN_FLIGHT each time).
    expect(duplicateCalls).toBeLessThanOrEqual(2 * CRASHES.length * IN_FLIGHT);
    // The restarts resumed chunks from their checkpoints.
    expect([...resumedLogs, service.logs()].join('')).toContain('chunk resumed from checkpoints');
    console.info(
      `crash test: ${duplicateCalls} duplicate upstream calls of ${total} requests across ${CRASHES.length} kill -9s, ` +
        `${inFlightAtCrashes} in flight at the crashes (bound ${2 * CRASHES.length * IN_FLIGHT})`,
    );
  }, 120_000);
});
