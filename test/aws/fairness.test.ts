// Fair sharing in the AWS runtime, in-process (test/support/aws-harness.ts): every chunk message
// carries its project as MessageGroupId (SQS fair queues' tenant), and a batch has at most
// CHUNK_WINDOW chunks on the queue at once, so a small batch of another project waits behind at
// most a window of the big one's chunks, not its whole backlog. The stand-in delivers in the order
// sent, as a standard queue roughly does while fair queues' noisy-neighbour detection does not
// trigger (with MaximumConcurrency 20 it may never): what is measured is what the window alone gives.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { logger } from '../../functions/observability.js';
import { AwsHarness } from '../support/aws-harness.js';
import { chatLines, submit, waitForBatch } from '../support/e2e.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';

const WINDOW = 4;

describe('fair sharing in the AWS runtime', () => {
  let upstream: UpstreamSim;
  let aws: AwsHarness;

  beforeAll(async () => {
    process.env.POWERTOOLS_METRICS_DISABLED = 'true';
    logger().setLogLevel('SILENT');
    upstream = await startUpstreamSim({ latencyMs: 20 });
    aws = await AwsHarness.start({
      env: {
        UPSTREAM_CONFIG: JSON.stringify({ default: { baseUrl: upstream.baseURL }, routes: {} }),
        CHUNK_MAX_REQUESTS: '5',
        CHUNK_WINDOW: String(WINDOW),
        UPSTREAM_CONCURRENCY: '4',
      },
      workerConcurrency: 2,
    });
  });
  afterAll(async () => {
    await aws?.close();
    await upstream?.close();
  });

  it("tags chunks with their project and keeps a batch's chunks on the queue to a window", async () => {
    const a = aws.openai(await aws.createKey('team-a'));
    const b = aws.openai(await aws.createKey('team-b'));
    const big = await submit(a, chatLines(200, { prefix: 'big' }));
    let mostQueued = 0;
    const sampler = setInterval(() => {
      const queued = [...aws.sqs.queued.values()].filter((m) => m.body.includes(big.id)).length;
      mostQueued = Math.max(mostQueued, queued);
    }, 2);
    try {
      await waitForBatch(a, big.id, (batch) => (batch.request_counts?.completed ?? 0) >= 20, 60_000);
      const small = await submit(b, chatLines(5, { prefix: 'small' }));
      const done = await waitForBatch(b, small.id, undefined, 60_000);
      expect(done.status).toBe('completed');
      expect((await a.batches.retrieve(big.id)).status).toBe('in_progress');

      const { journal } = aws.sqs;
      const smallSent = journal.findIndex((e) => e.event === 'sent' && e.batchId === small.id);
      const smallDelivered = journal.findIndex((e) => e.event === 'delivered' && e.batchId === small.id);
      const aheadOfSmall = journal.slice(smallSent, smallDelivered).filter((e) => e.event === 'delivered' && e.batchId === big.id).length;
      // Behind at most the window of A's chunks (and the ones already running), not A's 40.
      expect(aheadOfSmall).toBeLessThanOrEqual(WINDOW);
      console.log(`B's chunk waited behind ${aheadOfSmall} deliveries of A's chunks (window ${WINDOW}; A has 40 chunks)`);
      expect((await waitForBatch(a, big.id, undefined, 60_000)).status).toBe('completed');
    } finally {
      clearInterval(sampler);
    }
    // At most a window of A's chunks was ever on the queue, in flight included, and for a moment one
    // more per worker: a worker enqueues the successor before its own message is deleted.
    expect(mostQueued).toBeLessThanOrEqual(WINDOW + 2);
    expect(mostQueued).toBeGreaterThan(0);
    const sent = aws.sqs.journal.filter((e) => e.event === 'sent');
    expect(sent.filter((e) => e.batchId === big.id).every((e) => e.groupId === 'team-a')).toBe(true);
    expect(sent.filter((e) => e.batchId !== big.id).every((e) => e.groupId === 'team-b')).toBe(true);
    // Every chunk ran: 40 of A's, once each here (no faults).
    expect(sent.filter((e) => e.batchId === big.id)).toHaveLength(40);
  }, 120_000);
});
