// Scenario "huge-answers" (issue 10, item 2): one batch of 40 chat requests (or --requests) whose
// every answer is 20 MB of JSON (HUGE_ANSWER_MB), from the upstream simulator at --latency, through
// the service (a real `npm start` child process with its default MAX_RESPONSE_BYTES and
// MAX_INFLIGHT_RESPONSE_BYTES). Prints the time end to end, the service's peak RSS (VmHWM), and
// whether every line is accounted for exactly once; the results are streamed, never held whole
// (the output file is requests × size, 800 MB by default). Target: every line once, peak RSS under 1 GB.
import { createReadStream } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import OpenAI from 'openai';
import { startServiceProcess } from '../../test/support/service-process.js';
import { startUpstreamSim } from '../../test/support/upstream-sim.js';
import { type BenchOptions, type Cleanup, formatSeconds, printTable, type Scenario, writeRequestsFile } from '../run.js';

const MiB = 1024 * 1024;

function vmHwmKb(pid: number): Promise<number> {
  return readFile(`/proc/${pid}/status`, 'utf8').then((text) => Number(/VmHWM:\s+(\d+)\s+kB/.exec(text)?.[1] ?? Number.NaN));
}

/** Streams a results file line by line, counting each custom_id (read from the line's head, not parsed whole). */
async function countLines(
  response: Response,
  seen: Map<string, number>,
): Promise<{ lines: number; bytes: number; codes: Map<string, number> }> {
  const input = Readable.fromWeb(response.body as unknown as WebReadableStream<Uint8Array>);
  let lines = 0;
  let bytes = 0;
  const codes = new Map<string, number>();
  for await (const line of readline.createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY })) {
    if (!line) continue;
    lines++;
    bytes += line.length + 1;
    const id = /"custom_id":"([^"]+)"/.exec(line.slice(0, 300))?.[1] ?? '?';
    seen.set(id, (seen.get(id) ?? 0) + 1);
    const code = /"error":\{"code":"([^"]+)"/.exec(line.slice(-2_000))?.[1];
    if (code) codes.set(code, (codes.get(code) ?? 0) + 1);
  }
  return { lines, bytes, codes };
}

async function hugeAnswers(options: BenchOptions, cleanup: Cleanup): Promise<void> {
  const requests = process.argv.some((arg) => arg === '--requests' || arg.startsWith('--requests=')) ? options.requests : 40;
  const answerMb = Number(process.env.HUGE_ANSWER_MB ?? 20);
  const sim = await startUpstreamSim({ latencyMs: options.latencyMs, answerBytes: answerMb * MiB });
  cleanup.add('upstream sim', () => sim.close());
  const dir = await mkdtemp(path.join(os.tmpdir(), 'batch-huge-'));
  cleanup.add('temp dir', () => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'requests.jsonl');
  await writeRequestsFile(file, requests);

  console.error('[huge-answers] starting the service ...');
  const service = await startServiceProcess({ asNpmStart: true, env: { UPSTREAM_BASE_URL: sim.baseURL } });
  cleanup.add('service process', () => service.removeDataDir());
  const idleKb = await vmHwmKb(service.pid);
  const client = new OpenAI({ baseURL: service.baseURL, apiKey: 'bench', maxRetries: 0, timeout: 3_600_000 });

  console.error(`[huge-answers] one batch of ${requests} requests, each answered with ${answerMb} MiB ...`);
  const started = performance.now();
  const input = await client.files.create({ file: createReadStream(file), purpose: 'batch' });
  let batch = await client.batches.create({ input_file_id: input.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
  let lastReport = performance.now();
  while (!['completed', 'failed', 'expired', 'cancelled'].includes(batch.status)) {
    if (performance.now() - started > options.timeoutMs)
      throw new Error(`batch ${batch.id} still ${batch.status} after ${formatSeconds(options.timeoutMs)}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
    batch = await client.batches.retrieve(batch.id);
    if (performance.now() - lastReport > 5_000) {
      lastReport = performance.now();
      console.error(
        `[huge-answers]   ${batch.status}: ${batch.request_counts?.completed ?? 0}/${batch.request_counts?.total ?? 0}, peak RSS so far ${((await vmHwmKb(service.pid)) / 1024).toFixed(0)} MB`,
      );
    }
  }
  const batchMs = performance.now() - started;
  const peakKb = await vmHwmKb(service.pid);

  console.error(`[huge-answers] ${batch.status}; reading the results (streamed) ...`);
  const seen = new Map<string, number>();
  const output = batch.output_file_id ? await countLines(await client.files.content(batch.output_file_id), seen) : undefined;
  const errors = batch.error_file_id ? await countLines(await client.files.content(batch.error_file_id), seen) : undefined;
  const expected = Array.from({ length: requests }, (_, i) => `req-${i}`);
  const missing = expected.filter((id) => !seen.has(id)).length;
  const doubled = [...seen.values()].filter((count) => count > 1).length;
  const unexpected = [...seen.keys()].filter((id) => !expected.includes(id)).length;
  const peakAfterDownloadKb = await vmHwmKb(service.pid);
  const stats = sim.stats();

  printTable(
    `\nhuge-answers: ${requests} requests answered with ${answerMb} MiB each, upstream latency ${options.latencyMs} ms (Node ${process.version}, ${os.cpus().length} CPUs)`,
    [
      ['status', `${batch.status}  ${JSON.stringify(batch.request_counts)}`],
      ['time (upload to final status)', formatSeconds(batchMs)],
      [
        'service peak RSS (VmHWM)',
        `${(peakKb / 1024).toFixed(0)} MB (idle ${(idleKb / 1024).toFixed(0)} MB; ${(peakAfterDownloadKb / 1024).toFixed(0)} MB after the downloads)`,
      ],
      [
        'lines ok',
        `${missing === 0 && doubled === 0 && unexpected === 0 ? 'yes' : 'no'}  (${output?.lines ?? 0} output, ${errors?.lines ?? 0} error, ${missing} missing, ${doubled} doubled)`,
      ],
      ['output file', `${((output?.bytes ?? 0) / MiB).toFixed(0)} MiB`],
      ['error codes', JSON.stringify(Object.fromEntries(errors?.codes ?? []))],
      ['upstream calls / request', (stats.requests / requests).toFixed(3)],
      ['target', `every line once and peak RSS under 1 GB: ${missing === 0 && doubled === 0 && peakKb < 1024 * 1024 ? 'met' : 'NOT met'}`],
    ],
  );
}

export const hugeAnswerScenarios: Record<string, Scenario> = {
  'huge-answers': {
    description: 'a 40-line batch of 20 MiB answers (HUGE_ANSWER_MB) through the service: time, peak RSS, every line once',
    run: hugeAnswers,
  },
};
