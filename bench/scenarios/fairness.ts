// Scenario "fairness": project A submits a big batch (--requests, default 20,000 lines); once it
// runs, project B submits 20 lines. Prints B's time alone and behind A's batch, and their ratio
// (the target: at most 1.5). Then two equal batches of two projects (a tenth of --requests
// each) submitted together: each one's time to its end, and the first's over the last's (1.00
// when they move at the same rate). One `npm start`, latency --latency, --concurrency in flight.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { startServiceProcess } from '../../test/support/service-process.js';
import { startUpstreamSim } from '../../test/support/upstream-sim.js';
import { type BenchOptions, type Cleanup, formatSeconds, printTable, type Scenario, writeRequestsFile } from '../run.js';

const SMALL = 20;
const TERMINAL = new Set(['completed', 'failed', 'expired', 'cancelled']);

async function fairness(options: BenchOptions, cleanup: Cleanup): Promise<void> {
  const n = options.requests;
  const sim = await startUpstreamSim({ latencyMs: options.latencyMs });
  cleanup.add('upstream sim', () => sim.close());
  const service = await startServiceProcess({
    asNpmStart: true,
    env: { UPSTREAM_BASE_URL: sim.baseURL, UPSTREAM_CONCURRENCY: String(options.concurrency), API_KEYS: 'bench-a:team-a,bench-b:team-b' },
  });
  cleanup.add('service process', () => service.removeDataDir());
  const a = new OpenAI({ baseURL: service.baseURL, apiKey: 'bench-a', maxRetries: 2 });
  const b = new OpenAI({ baseURL: service.baseURL, apiKey: 'bench-b', maxRetries: 2 });
  const tempDir = await mkdtemp(path.join(os.tmpdir(), 'batch-bench-'));
  cleanup.add('temp dir', () => rm(tempDir, { recursive: true, force: true }));
  const { createReadStream } = await import('node:fs');
  const fileOf = async (openai: OpenAI, lines: number, name: string) => {
    const filePath = path.join(tempDir, name);
    await writeRequestsFile(filePath, lines);
    return openai.files.create({ file: createReadStream(filePath), purpose: 'batch' });
  };
  const create = (openai: OpenAI, fileId: string) =>
    openai.batches.create({ input_file_id: fileId, endpoint: '/v1/chat/completions', completion_window: '24h' });
  const until = async (openai: OpenAI, id: string, done: (batch: OpenAI.Batches.Batch) => boolean) => {
    const deadline = performance.now() + options.timeoutMs;
    for (;;) {
      const batch = await openai.batches.retrieve(id);
      if (done(batch) || TERMINAL.has(batch.status)) return batch;
      if (performance.now() > deadline) throw new Error(`batch ${id} still ${batch.status} after ${options.timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };
  const ended = (batch: OpenAI.Batches.Batch) => TERMINAL.has(batch.status);

  const smallFile = await fileOf(b, SMALL, 'small.jsonl');
  const bigFile = await fileOf(a, n, 'big.jsonl');
  // B alone (twice: the first warms the service up).
  let aloneMs = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 2; i++) {
    const started = performance.now();
    await until(b, (await create(b, smallFile.id)).id, ended);
    aloneMs = Math.min(aloneMs, performance.now() - started);
  }
  console.error(`[fairness] ${SMALL} lines alone: ${formatSeconds(aloneMs)}; now ${n} lines of project A, then ${SMALL} of B ...`);
  const bigStarted = performance.now();
  const big = await create(a, bigFile.id);
  await until(a, big.id, (batch) => (batch.request_counts?.completed ?? 0) > 0);
  const started = performance.now();
  const small = await until(b, (await create(b, smallFile.id)).id, ended);
  const behindMs = performance.now() - started;
  const bigAtSmallEnd = await a.batches.retrieve(big.id);
  const bigDone = await until(a, big.id, ended);
  const bigMs = performance.now() - bigStarted;

  const each = Math.max(SMALL, Math.floor(n / 10));
  console.error(`[fairness] two equal batches of ${each} lines, one per project ...`);
  const [fileA, fileB] = await Promise.all([fileOf(a, each, 'even-a.jsonl'), fileOf(b, each, 'even-b.jsonl')]);
  const evenStarted = performance.now();
  const [evenA, evenB] = await Promise.all([create(a, fileA.id), create(b, fileB.id)]);
  // Each batch's time to its end: with a chunk or two per batch, counts move in steps, so the end
  // times say more than how far the other was when the first ended.
  const endOf = async (openai: OpenAI, id: string) => (await until(openai, id, ended), performance.now() - evenStarted);
  const [endA, endB] = await Promise.all([endOf(a, evenA.id), endOf(b, evenB.id)]);
  const progress = Math.min(endA, endB) / Math.max(endA, endB);

  printTable(
    `\nfairness: ${n} lines of project A, then ${SMALL} of project B; upstream ${options.latencyMs} ms, ${options.concurrency} in flight (Node ${process.version}, ${os.cpus().length} CPUs)`,
    [
      ['B alone', formatSeconds(aloneMs)],
      ['B behind A', `${formatSeconds(behindMs)}  (status ${small.status}; A then at ${bigAtSmallEnd.request_counts?.completed}/${n})`],
      ['B behind A / B alone', `${(behindMs / aloneMs).toFixed(2)}×  (target ≤ 1.5)`],
      ['A', `${formatSeconds(bigMs)}  (status ${bigDone.status})`],
      [
        `two equal batches (${each} lines each)`,
        `ended after ${formatSeconds(endA)} (A) and ${formatSeconds(endB)} (B): first / last ${progress.toFixed(2)}`,
      ],
    ],
  );
  console.log('  note: compare the ratios taken within one run; absolute times are noisy on this machine (2 cores).');
}

export const fairnessScenarios: Record<string, Scenario> = {
  fairness: {
    description:
      "a small batch of project B behind a big one of project A: B's time alone, behind A, the ratio; two equal batches' progress",
    run: fairness,
  },
};
