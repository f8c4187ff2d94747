// Benchmarks: print figures, never assert. `npm run bench -- [--scenario NAME] [--requests N]
// [--latency MS] [--concurrency C] [--timeout S]`; without --scenario every scenario runs.
//
// Scenario "throughput": N chat requests against the upstream simulator at latency L with C in
// flight, three ways: the floor (ceil(N/C)·L), a plain fetch client holding exactly C in flight,
// and the service (a real `npm start` child process, driven with the official openai SDK: upload,
// create a batch, poll, download). Compare the ratios taken within one run: the machine is noisy.

import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import OpenAI from 'openai';
import { type ServiceProcess, startServiceProcess } from '../test/support/service-process.js';
import { startUpstreamSim } from '../test/support/upstream-sim.js';
import { bigScenarios } from './scenarios/big.js';
import { fairnessScenarios } from './scenarios/fairness.js';
import { faultScenarios } from './scenarios/faults.js';
import { hugeAnswerScenarios } from './scenarios/huge-answers.js';
import { webhookScenarios } from './scenarios/webhooks.js';

// ---------------------------------------------------------------------------------------------
// Reusable pieces

export interface BenchOptions {
  requests: number;
  latencyMs: number;
  concurrency: number;
  /** Give up on a batch after this long (ms). */
  timeoutMs: number;
}

/** Cleanup actions, run last-in first-out, each at most once, errors reported and swallowed. */
export class Cleanup {
  private readonly actions: Array<{ label: string; fn: () => unknown }> = [];
  add(label: string, fn: () => unknown): void {
    this.actions.push({ label, fn });
  }
  async run(): Promise<void> {
    for (let action = this.actions.pop(); action; action = this.actions.pop()) {
      try {
        await action.fn();
      } catch (error) {
        console.error(`cleanup "${action.label}" failed:`, error);
      }
    }
  }
}

/** The body of request i, the same for the plain client and the batch lines. */
export function chatBody(i: number) {
  return { model: 'sim-model', messages: [{ role: 'user', content: `question ${i}` }] };
}

/** One batch input line for request i. */
export function chatLine(i: number) {
  return { custom_id: `req-${i}`, method: 'POST', url: '/v1/chat/completions', body: chatBody(i) };
}

/** Writes an n-line JSONL file, streaming (memory does not grow with n). */
export async function writeRequestsFile(filePath: string, n: number, line: (i: number) => unknown = chatLine): Promise<void> {
  const out = createWriteStream(filePath);
  for (let i = 0; i < n; i++) {
    if (!out.write(`${JSON.stringify(line(i))}\n`)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
}

export interface PlainClientResult {
  wallMs: number;
  statuses: Record<string, number>;
  errors: number;
}

/** Sends `requests` POSTs with global fetch, holding exactly `concurrency` in flight. */
export async function runPlainClient(options: {
  url: string;
  requests: number;
  concurrency: number;
  body?: (i: number) => unknown;
  headers?: Record<string, string>;
}): Promise<PlainClientResult> {
  const body = options.body ?? chatBody;
  const headers = { 'content-type': 'application/json', authorization: 'Bearer bench', ...options.headers };
  const statuses: Record<string, number> = {};
  let errors = 0;
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < options.requests; i = next++) {
      try {
        const response = await fetch(options.url, { method: 'POST', headers, body: JSON.stringify(body(i)) });
        await response.arrayBuffer();
        statuses[response.status] = (statuses[response.status] ?? 0) + 1;
      } catch {
        errors++;
      }
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: Math.min(options.concurrency, options.requests) }, worker));
  return { wallMs: performance.now() - started, statuses, errors };
}

const TERMINAL = new Set(['completed', 'failed', 'expired', 'cancelled']);

export interface ServiceBatchResult {
  /** From the start of the upload to the terminal status. */
  wallMs: number;
  batch: OpenAI.Batches.Batch;
  /** The output file's text ('' when there is none). */
  output: string;
  /** The error file's text ('' when there is none). */
  errors: string;
}

/** Upload, create a batch, poll every pollMs until a terminal status, download the results. */
export async function runServiceBatch(options: {
  baseURL: string;
  filePath: string;
  endpoint?: '/v1/chat/completions' | '/v1/embeddings' | '/v1/completions' | '/v1/responses';
  apiKey?: string;
  pollMs?: number;
  timeoutMs: number;
  onProgress?: (batch: OpenAI.Batches.Batch) => void;
}): Promise<ServiceBatchResult> {
  const client = new OpenAI({ baseURL: options.baseURL, apiKey: options.apiKey ?? 'bench', maxRetries: 0 });
  const started = performance.now();
  const file = await client.files.create({ file: createReadStream(options.filePath), purpose: 'batch' });
  let batch = await client.batches.create({
    input_file_id: file.id,
    endpoint: options.endpoint ?? '/v1/chat/completions',
    completion_window: '24h',
  });
  const deadline = started + options.timeoutMs;
  while (!TERMINAL.has(batch.status)) {
    if (performance.now() > deadline) {
      throw new Error(`batch ${batch.id} still ${batch.status} after ${options.timeoutMs} ms: ${JSON.stringify(batch.request_counts)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, options.pollMs ?? 100));
    batch = await client.batches.retrieve(batch.id);
    options.onProgress?.(batch);
  }
  const wallMs = performance.now() - started;
  const output = batch.output_file_id ? await (await client.files.content(batch.output_file_id)).text() : '';
  const errors = batch.error_file_id ? await (await client.files.content(batch.error_file_id)).text() : '';
  return { wallMs, batch, output, errors };
}

export interface CoverageCheck {
  outputLines: number;
  errorLines: number;
  missing: number;
  duplicates: number;
  /** Every expected custom_id exactly once across the texts, and nothing else. */
  ok: boolean;
}

/** Checks that every custom_id in `expected` appears exactly once across the JSONL texts. */
export function checkCoverage(expected: Iterable<string>, output: string, errors = ''): CoverageCheck {
  const counts = new Map<string, number>();
  for (const id of expected) counts.set(id, 0);
  let unexpected = 0;
  const scan = (text: string) => {
    let lines = 0;
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      lines++;
      let id: unknown;
      try {
        id = (JSON.parse(line) as { custom_id?: unknown }).custom_id;
      } catch {
        unexpected++;
        continue;
      }
      const seen = typeof id === 'string' ? counts.get(id) : undefined;
      if (seen === undefined) unexpected++;
      else counts.set(id as string, seen + 1);
    }
    return lines;
  };
  const outputLines = scan(output);
  const errorLines = scan(errors);
  let missing = 0;
  let duplicates = 0;
  for (const seen of counts.values()) {
    if (seen === 0) missing++;
    else if (seen > 1) duplicates += seen - 1;
  }
  return { outputLines, errorLines, missing, duplicates, ok: missing === 0 && duplicates === 0 && unexpected === 0 };
}

export function formatSeconds(ms: number): string {
  return `${(ms / 1000).toFixed(2)} s`;
}

/** Prints label/value rows with the labels padded to one column. */
export function printTable(title: string, rows: Array<[label: string, value: string]>): void {
  const width = Math.max(...rows.map(([label]) => label.length));
  console.log(title);
  for (const [label, value] of rows) console.log(`  ${label.padEnd(width)}  ${value}`);
}

// ---------------------------------------------------------------------------------------------
// Scenarios

export interface Scenario {
  description: string;
  run(options: BenchOptions, cleanup: Cleanup): Promise<void>;
}

async function throughput(options: BenchOptions, cleanup: Cleanup): Promise<void> {
  const { requests: n, latencyMs: latency, concurrency: c } = options;
  const sim = await startUpstreamSim({ latencyMs: latency });
  cleanup.add('upstream sim', () => sim.close());

  const floorMs = Math.ceil(n / c) * latency;

  // Warm the plain client up first (JIT, connection pool), so its figure is not a cold start's.
  const url = `${sim.baseURL}/chat/completions`;
  const warmup = Math.min(n, 5 * c);
  console.error(`[throughput] plain client: ${warmup} warm-up requests, then ${n} requests, ${c} in flight ...`);
  await runPlainClient({ url, requests: warmup, concurrency: c });
  sim.reset();
  const plain = await runPlainClient({ url, requests: n, concurrency: c });
  const plainPeak = sim.stats().peakInFlight;
  const plainOk = plain.statuses['200'] ?? 0;

  const tempDir = await mkdtemp(path.join(os.tmpdir(), 'batch-bench-'));
  cleanup.add('temp dir', () => rm(tempDir, { recursive: true, force: true }));
  const filePath = path.join(tempDir, 'requests.jsonl');
  await writeRequestsFile(filePath, n);

  console.error('[throughput] starting the service ...');
  const service: ServiceProcess = await startServiceProcess({
    asNpmStart: true,
    env: { UPSTREAM_BASE_URL: sim.baseURL, UPSTREAM_CONCURRENCY: String(c) },
  });
  cleanup.add('service process', () => service.removeDataDir());

  sim.reset();
  console.error(`[throughput] service: one batch of ${n} requests ...`);
  let lastReport = performance.now();
  let result: ServiceBatchResult;
  try {
    result = await runServiceBatch({
      baseURL: service.baseURL,
      filePath,
      timeoutMs: options.timeoutMs,
      onProgress: (batch) => {
        if (performance.now() - lastReport < 5_000) return;
        lastReport = performance.now();
        const counts = batch.request_counts;
        console.error(
          `[throughput]   ${batch.status}: ${counts?.completed ?? 0}/${counts?.total ?? 0} done, ${counts?.failed ?? 0} failed`,
        );
      },
    });
  } catch (error) {
    console.error(`--- last service logs ---\n${service.logs().split('\n').slice(-40).join('\n')}`);
    throw error;
  }
  const simStats = sim.stats();
  const coverage = checkCoverage(
    Array.from({ length: n }, (_, i) => `req-${i}`),
    result.output,
    result.errors,
  );
  const rate = (ms: number) => `${Math.round((n / ms) * 1000)} req/s`;
  const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}×`;

  printTable(
    `\nthroughput: ${n} requests, upstream latency ${latency} ms, ${c} in flight (Node ${process.version}, ${os.cpus().length} CPUs)`,
    [
      ['floor  ceil(N/C)·L', formatSeconds(floorMs)],
      [
        'plain client (fetch, warm)',
        `${formatSeconds(plain.wallMs)}  ${rate(plain.wallMs)}  (${plainOk}/${n} ok, ${plain.errors} errors, peak ${plainPeak} in flight)`,
      ],
      ['service (one batch)', `${formatSeconds(result.wallMs)}  ${rate(result.wallMs)}  (status ${result.batch.status})`],
      ['service / plain', ratio(result.wallMs, plain.wallMs)],
      ['service / floor', ratio(result.wallMs, floorMs)],
      ['request_counts', JSON.stringify(result.batch.request_counts)],
      [
        'lines ok',
        `${coverage.ok ? 'yes' : 'no'}  (${coverage.outputLines} output, ${coverage.errorLines} error, ${coverage.missing} missing, ${coverage.duplicates} duplicated)`,
      ],
      ['upstream calls / request', (simStats.requests / n).toFixed(3)],
      ['sim peak in flight', String(simStats.peakInFlight)],
      ['sim answers', JSON.stringify(simStats.byStatus)],
    ],
  );
  console.log('  note: compare the ratios taken within one run; absolute times are noisy on this machine (2 cores).');
}

export const scenarios: Record<string, Scenario> = {
  throughput: {
    description: 'N chat requests: floor vs a plain fetch client vs one batch through the service',
    run: throughput,
  },
  ...faultScenarios,
  ...bigScenarios,
  ...hugeAnswerScenarios,
  ...webhookScenarios,
  ...fairnessScenarios,
};

// ---------------------------------------------------------------------------------------------
// Command line

function positive(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} must be a positive number, got "${text}"`);
  return value;
}

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      scenario: { type: 'string' },
      requests: { type: 'string' },
      latency: { type: 'string' },
      concurrency: { type: 'string' },
      timeout: { type: 'string' },
      help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help) {
    console.log('usage: npm run bench -- [--scenario NAME] [--requests N] [--latency MS] [--concurrency C] [--timeout S]');
    for (const [name, scenario] of Object.entries(scenarios)) console.log(`  ${name.padEnd(12)} ${scenario.description}`);
    return 0;
  }
  const options: BenchOptions = {
    requests: Math.floor(positive('requests', values.requests, 10_000)),
    latencyMs: positive('latency', values.latency, 100),
    concurrency: Math.floor(positive('concurrency', values.concurrency, 100)),
    timeoutMs: positive('timeout', values.timeout, 900) * 1000,
  };
  const names = values.scenario ? values.scenario.split(',') : Object.keys(scenarios);
  for (const name of names) {
    if (!scenarios[name]) throw new Error(`unknown scenario "${name}"; known: ${Object.keys(scenarios).join(', ')}`);
  }

  let failed = false;
  for (const name of names) {
    const cleanup = new Cleanup();
    let interrupted = false;
    const onSignal = (signal: NodeJS.Signals) => {
      interrupted = true;
      console.error(`\n${signal}: cleaning up ...`);
      void cleanup.run().finally(() => process.exit(130));
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    try {
      await scenarios[name]!.run(options, cleanup);
    } catch (error) {
      failed = true;
      if (!interrupted) console.error(`scenario "${name}" crashed:`, error);
    } finally {
      await cleanup.run();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  }
  return failed ? 1 : 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      console.error(error instanceof Error ? error.message : error);
      process.exitCode = 1;
    },
  );
}
