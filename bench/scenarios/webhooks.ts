// Scenario "webhooks": 1,000 batches (or --requests) ending at about the same time, twice through
// one `npm start`: without a webhook endpoint, then with one subscribed to batch.completed. Prints
// how long the batches took each time (their own throughput must not drop with deliveries going
// out) and, with the endpoint, when the last delivery arrived, how far behind the last batch's end,
// and that every delivery verifies with client.webhooks.unwrap.
import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import pLimit from 'p-limit';
import { startServiceProcess } from '../../test/support/service-process.js';
import { startUpstreamSim } from '../../test/support/upstream-sim.js';
import { startWebhookReceiver } from '../../test/support/webhook-receiver.js';
import { type BenchOptions, type Cleanup, formatSeconds, printTable, type Scenario, writeRequestsFile } from '../run.js';

const LINES_PER_BATCH = 2;

function batchCount(options: BenchOptions): number {
  return process.argv.some((arg) => arg === '--requests' || arg.startsWith('--requests=')) ? options.requests : 1_000;
}

async function webhooks(options: BenchOptions, cleanup: Cleanup): Promise<void> {
  const n = batchCount(options);
  const sim = await startUpstreamSim({ latencyMs: options.latencyMs });
  cleanup.add('upstream sim', () => sim.close());
  const receiver = await startWebhookReceiver();
  cleanup.add('webhook receiver', () => receiver.close());
  const tempDir = await mkdtemp(path.join(os.tmpdir(), 'batch-bench-'));
  cleanup.add('temp dir', () => rm(tempDir, { recursive: true, force: true }));
  const filePath = path.join(tempDir, 'requests.jsonl');
  await writeRequestsFile(filePath, LINES_PER_BATCH);

  /**
   * One `npm start` of its own per round (so that neither round finds the other's batches in its
   * store): n batches over one file, then waits until all are final.
   */
  async function round(label: string, withEndpoint: boolean) {
    const service = await startServiceProcess({
      asNpmStart: true,
      env: { UPSTREAM_BASE_URL: sim.baseURL, UPSTREAM_CONCURRENCY: String(options.concurrency), WEBHOOK_ALLOW_PRIVATE_URLS: 'true' },
    });
    cleanup.add(`service process (${label})`, () => service.removeDataDir());
    const client = new OpenAI({ baseURL: service.baseURL, apiKey: 'bench', maxRetries: 2 });
    const file = await client.files.create({ file: createReadStream(filePath), purpose: 'batch' });
    const endpoint = withEndpoint
      ? await client.webhooks.create({ name: 'bench', url: receiver.url, event_types: ['batch.completed'] })
      : undefined;
    console.error(`[webhooks] ${label}: creating ${n} batches ...`);
    const started = performance.now();
    const limit = pLimit(16);
    const ids = new Set(
      await Promise.all(
        Array.from({ length: n }, () =>
          limit(
            async () =>
              (await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' })).id,
          ),
        ),
      ),
    );
    const deadline = Date.now() + options.timeoutMs;
    for (;;) {
      let open = 0;
      for await (const batch of client.batches.list({ limit: 100 })) {
        if (ids.has(batch.id) && !['completed', 'failed', 'expired', 'cancelled'].includes(batch.status)) open++;
      }
      if (open === 0) break;
      if (Date.now() > deadline) throw new Error(`${open} batches still open after ${options.timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    const wallMs = performance.now() - started;
    // The round with an endpoint runs on until its deliveries arrived; the other frees the machine now.
    if (!withEndpoint) await service.removeDataDir();
    return { wallMs, ids, endedAtMs: Date.now(), client, endpoint };
  }

  const without = await round('without an endpoint', false);
  const withHook = await round('with an endpoint', true);
  const ours = () => receiver.received.filter((r) => withHook.ids.has(JSON.parse(r.body).data?.id));
  await receiver.waitFor(() => new Set(ours().map((r) => r.headers['webhook-id'])).size >= n, options.timeoutMs);
  const deliveries = ours();
  const lastArrival = Math.max(...deliveries.map((r) => r.atMs));
  let verified = 0;
  for (const request of deliveries) {
    await withHook.client.webhooks.unwrap(request.body, request.headers as Record<string, string>, withHook.endpoint!.signing_secret);
    verified++;
  }
  const unique = new Set(deliveries.map((r) => r.headers['webhook-id'])).size;

  printTable(
    `\nwebhooks: ${n} batches of ${LINES_PER_BATCH} requests, upstream latency ${options.latencyMs} ms (Node ${process.version})`,
    [
      ['batches, no endpoint', `${formatSeconds(without.wallMs)}  ${Math.round((n / without.wallMs) * 1000)} batches/s`],
      ['batches, with endpoint', `${formatSeconds(withHook.wallMs)}  ${Math.round((n / withHook.wallMs) * 1000)} batches/s`],
      ['with / without', `${(withHook.wallMs / without.wallMs).toFixed(2)}×`],
      ['last delivery after last batch seen final', formatSeconds(Math.max(0, lastArrival - withHook.endedAtMs))],
      [
        'deliveries',
        `${unique} events, ${deliveries.length} requests (${deliveries.length - unique} repeats), ${verified} verified by unwrap`,
      ],
    ],
  );
}

export const webhookScenarios: Record<string, Scenario> = {
  webhooks: {
    description:
      '1,000 batches ending at once: batch throughput with and without a webhook endpoint, and time until every delivery arrived',
    run: webhooks,
  },
};
