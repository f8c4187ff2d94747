// Scenarios "faults" and "faults-429": 50,000 chat requests (or --requests) at --latency (100 ms)
// with --concurrency (100) in flight, against the upstream simulator, three ways: the floor, a
// plain fetch client, and one batch through the service (a real `npm start` child process). The
// client and the service each run in a process of their own, the simulator in this one. The
// second runs the same with 10% of the upstream's answers 429 (`retry-after-ms: 50`), the plain
// client retrying them as an SDK would (the slot is free while it waits), and counts upstream
// calls per request: retries only, never a request answered twice.
//
// To profile the service: SERVICE_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" npm run bench -- --scenario faults
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT, startServiceProcess } from '../../test/support/service-process.js';
import { startUpstreamSim, type UpstreamSim } from '../../test/support/upstream-sim.js';
import {
  type BenchOptions,
  type Cleanup,
  checkCoverage,
  formatSeconds,
  printTable,
  runServiceBatch,
  type Scenario,
  type ServiceBatchResult,
  writeRequestsFile,
} from '../run.js';

/** 50,000 unless --requests says otherwise: the figure the README reports. */
function requestCount(options: BenchOptions): number {
  return process.argv.some((arg) => arg === '--requests' || arg.startsWith('--requests=')) ? options.requests : 50_000;
}

interface PlainResult {
  wallMs: number;
  ok: number;
  failed: number;
  attempts: number;
}

/** Runs bench/scenarios/plain-client.ts as a process of its own; its wall time excludes its warm-up. */
async function plainClient(url: string, requests: number, concurrency: number): Promise<PlainResult> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', 'bench/scenarios/plain-client.ts', url, String(requests), String(concurrency)],
    {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`plain client exited with ${code}`);
  return JSON.parse(out.trim().split('\n').at(-1)!) as PlainResult;
}

async function compare(name: string, options: BenchOptions, cleanup: Cleanup, rateLimitRate: number): Promise<void> {
  const n = requestCount(options);
  const { latencyMs: latency, concurrency: c } = options;
  const sim: UpstreamSim = await startUpstreamSim({ latencyMs: latency, seed: 1 });
  cleanup.add('upstream sim', () => sim.close());
  const url = `${sim.baseURL}/chat/completions`;

  console.error(`[${name}] plain client (a process of its own): warm-up, then ${n} requests, ${c} in flight ...`);
  sim.configure({ rateLimitRate, seed: 1 });
  const plain = await plainClient(url, n, c);

  const tempDir = await mkdtemp(path.join(os.tmpdir(), 'batch-bench-'));
  cleanup.add('temp dir', () => rm(tempDir, { recursive: true, force: true }));
  const filePath = path.join(tempDir, 'requests.jsonl');
  await writeRequestsFile(filePath, n);

  console.error(`[${name}] starting the service ...`);
  const service = await startServiceProcess({
    asNpmStart: true,
    env: { UPSTREAM_BASE_URL: sim.baseURL, UPSTREAM_CONCURRENCY: String(c), MAX_REQUESTS_PER_BATCH: String(Math.max(n, 50_000)) },
  });
  cleanup.add('service process', () => service.removeDataDir());
  sim.configure({ seed: 1 });
  sim.reset();
  console.error(`[${name}] service: one batch of ${n} requests ...`);
  let lastReport = performance.now();
  let result: ServiceBatchResult;
  const startedAt = Date.now();
  try {
    result = await runServiceBatch({
      baseURL: service.baseURL,
      filePath,
      timeoutMs: options.timeoutMs,
      onProgress: (batch) => {
        if (performance.now() - lastReport < 10_000) return;
        lastReport = performance.now();
        console.error(`[${name}]   ${batch.status}: ${batch.request_counts?.completed ?? 0}/${batch.request_counts?.total ?? 0} done`);
      },
    });
  } catch (error) {
    console.error(`--- last service logs ---\n${service.logs().split('\n').slice(-40).join('\n')}`);
    throw error;
  }
  const endedAt = Date.now();
  const serviceStats = sim.stats();
  const logged = (message: string) => {
    const line = service
      .logs()
      .split('\n')
      .find((l) => l.includes(`"message":"${message}"`));
    return line ? Date.parse((JSON.parse(line) as { time: string }).time) : Number.NaN;
  };
  const validatedAt = logged('batch validated');
  const finalizedAt = logged('batch finalized');
  const coverage = checkCoverage(
    Array.from({ length: n }, (_, i) => `req-${i}`),
    result.output,
    result.errors,
  );
  const limitChanges = service
    .logs()
    .split('\n')
    .filter((line) => line.includes('upstream concurrency limit changed'))
    .map((line) => (JSON.parse(line) as { limit: number }).limit);

  // Each attempt holds a slot for one latency; retries wait without one.
  const expectedAttempts = n / (1 - rateLimitRate);
  const floorMs = Math.ceil(expectedAttempts / c) * latency;
  const rate = (ms: number) => `${Math.round((n / ms) * 1000)} req/s`;
  const ratio = (a: number, b: number) => `${(a / b).toFixed(3)}×`;
  printTable(
    `\n${name}: ${n} requests, upstream latency ${latency} ms, ${c} in flight, ${rateLimitRate * 100}% 429s (Node ${process.version}, ${os.cpus().length} CPUs)`,
    [
      [rateLimitRate > 0 ? 'floor  ceil(N/(1-p)/C)·L' : 'floor  ceil(N/C)·L', formatSeconds(floorMs)],
      ['plain client (fetch, warm)', `${formatSeconds(plain.wallMs)}  ${rate(plain.wallMs)}  (${plain.ok} ok, ${plain.failed} failed)`],
      ['service (one batch)', `${formatSeconds(result.wallMs)}  ${rate(result.wallMs)}  (status ${result.batch.status})`],
      ['service / plain', ratio(result.wallMs, plain.wallMs)],
      ['service / floor', ratio(result.wallMs, floorMs)],
      ['plain / floor', ratio(plain.wallMs, floorMs)],
      [
        'service phases',
        `upload+validate ${formatSeconds(validatedAt - startedAt)}, run+finalize ${formatSeconds(finalizedAt - validatedAt)}, poll+download ${formatSeconds(endedAt - finalizedAt)}`,
      ],
      ['request_counts', JSON.stringify(result.batch.request_counts)],
      [
        'lines ok',
        `${coverage.ok ? 'yes' : 'no'}  (${coverage.outputLines} output, ${coverage.errorLines} error, ${coverage.missing} missing, ${coverage.duplicates} duplicated)`,
      ],
      ['upstream calls / request', `service ${(serviceStats.requests / n).toFixed(3)}, plain ${(plain.attempts / n).toFixed(3)}`],
      ['requests answered twice', `service ${(serviceStats.byStatus['200'] ?? 0) - n}`],
      ['sim answers (service)', JSON.stringify(serviceStats.byStatus)],
      ['sim peak in flight (service)', String(serviceStats.peakInFlight)],
      ['adaptive limit changes', limitChanges.length === 0 ? 'none' : `${limitChanges.length}, lowest ${Math.min(...limitChanges)}`],
    ],
  );
  console.log('  note: compare the ratios taken within one run; absolute times are noisy on this machine (2 cores).');
}

export const faultScenarios: Record<string, Scenario> = {
  faults: {
    description: '50,000 requests (or --requests) at 100 ms, 100 in flight: floor vs plain client vs the service',
    run: (options, cleanup) => compare('faults', options, cleanup, 0),
  },
  'faults-429': {
    description: 'the same with 10% 429s (retry-after-ms 50): plain client retrying vs the service; upstream calls per request',
    run: (options, cleanup) => compare('faults-429', options, cleanup, 0.1),
  },
};
