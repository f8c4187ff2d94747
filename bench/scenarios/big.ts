// Big inputs (issue 5). Three scenarios:
//
//   big-validate  The validator alone, in process, on 200 MB files (one of ~2,000-byte chat lines,
//                 one of ~200-byte lines), beside a bare floor: split lines + JSON.parse per line.
//   big-rss       The service (a real `npm start` child process, limits raised) on 20 MB, 200 MB
//                 and 2 GB inputs of 2,000-byte lines (10,000 / 100,000 / 1,000,000 requests):
//                 upload through the Uploads API (64 MB parts, md5), a batch on batch-test-model,
//                 the output checked line by line; the service's peak RSS (VmHWM) after each.
//                 The 2 GB input is the 1,000,000-line batch end to end.
//   big-million   1,000,000 short lines (~200 MB) end to end on batch-test-model: the time, and
//                 every custom_id exactly once.
//
// Inputs are written streaming to os.tmpdir() and deleted after. Sizes can be narrowed with
// BIG_SIZES_MB (e.g. "20,200"); DATA_DIR is a fresh temp directory per service run.
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream, openAsBlob } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import OpenAI, { toFile } from 'openai';
import { JsonlLineSplitter } from '../../shared/input/jsonl.js';
import { validateBatchInput } from '../../shared/input/validate.js';
import { startServiceProcess } from '../../test/support/service-process.js';
import { type BenchOptions, type Cleanup, formatSeconds, printTable, type Scenario } from '../run.js';

const MB = 1_000_000;
const PART_BYTES = 64 * 1024 * 1024;

/** Line i of a generated input: a chat request of exactly `lineBytes` bytes (newline included). */
function makeLine(i: number, lineBytes: number): string {
  const head = `{"custom_id":"req-${i}","method":"POST","url":"/v1/chat/completions","body":{"model":"batch-test-model","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"`;
  const tail = `"}],"max_tokens":64}}\n`;
  const room = Math.max(0, lineBytes - head.length - tail.length);
  const words = `Review ${i}: the product arrived on time, works as described, and the battery lasts two days. `;
  return head + words.repeat(Math.ceil(room / words.length) + 1).slice(0, room) + tail;
}

/** Writes `lines` lines of `lineBytes` bytes, streaming; returns the size and the md5. */
async function writeInput(file: string, lines: number, lineBytes: number): Promise<{ bytes: number; md5: string }> {
  const out = createWriteStream(file, { highWaterMark: 1 << 20 });
  const md5 = createHash('md5');
  let bytes = 0;
  let batch: string[] = [];
  for (let i = 0; i < lines; i++) {
    batch.push(makeLine(i, lineBytes));
    if (batch.length === 512 || i === lines - 1) {
      const chunk = Buffer.from(batch.join(''));
      batch = [];
      md5.update(chunk);
      bytes += chunk.length;
      if (!out.write(chunk)) await once(out, 'drain');
    }
  }
  out.end();
  await once(out, 'finish');
  return { bytes, md5: md5.digest('hex') };
}

async function tempDir(cleanup: Cleanup): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'batch-big-'));
  cleanup.add(`temp dir ${dir}`, () => rm(dir, { recursive: true, force: true }));
  return dir;
}

const rate = (bytes: number, ms: number) => `${(bytes / MB / (ms / 1000)).toFixed(0)} MB/s`;

// ---------------------------------------------------------------------------------------------
// big-validate

async function floorParse(file: string): Promise<{ ms: number; lines: number }> {
  const started = performance.now();
  const splitter = new JsonlLineSplitter();
  let lines = 0;
  const onLine = (buf: Buffer, from: number, to: number) => {
    if (to > from) {
      JSON.parse(buf.toString('utf8', from, to));
      lines++;
    }
  };
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) splitter.pushRaw(chunk as Buffer, onLine);
  splitter.endRaw(onLine);
  return { ms: performance.now() - started, lines };
}

async function validateFile(file: string, lines: number) {
  const started = performance.now();
  const result = await validateBatchInput(createReadStream(file, { highWaterMark: 1 << 20 }), {
    endpoint: '/v1/chat/completions',
    maxRequests: lines,
    maxLineBytes: 6 * 1024 * 1024,
    maxErrors: 1_000,
    chunkMaxRequests: 500,
    chunkMaxBytes: 4 * 1024 * 1024,
    reread: () => createReadStream(file, { highWaterMark: 1 << 20 }),
  });
  return { ms: performance.now() - started, result };
}

async function bigValidate(_options: BenchOptions, cleanup: Cleanup): Promise<void> {
  const dir = await tempDir(cleanup);
  const rows: Array<[string, string]> = [];
  for (const lineBytes of [2_000, 200]) {
    const lines = Math.floor((200 * MB) / lineBytes);
    const file = path.join(dir, `validate-${lineBytes}.jsonl`);
    console.error(`[big-validate] writing ${lines} lines of ${lineBytes} bytes ...`);
    const { bytes } = await writeInput(file, lines, lineBytes);
    // Warm the page cache and the JIT once, then measure: best of three runs of each.
    await floorParse(file);
    let floor = Infinity;
    let validator = Infinity;
    let ok = false;
    for (let run = 0; run < 3; run++) {
      floor = Math.min(floor, (await floorParse(file)).ms);
      const validated = await validateFile(file, lines);
      validator = Math.min(validator, validated.ms);
      ok = validated.result.ok && validated.result.total === lines;
    }
    rows.push([`${lineBytes}-byte lines: floor (split + JSON.parse)`, `${rate(bytes, floor)}  (${formatSeconds(floor)})`]);
    rows.push([
      `${lineBytes}-byte lines: validator`,
      `${rate(bytes, validator)}  (${formatSeconds(validator)}, ${Math.round(lines / (validator / 1000)).toLocaleString('en-US')} lines/s, valid: ${ok ? 'yes' : 'NO'})`,
    ]);
    await rm(file, { force: true });
  }
  printTable(
    `\nbig-validate: 200 MB files, one core, best of 3 (Node ${process.version}, ${os.cpus().length} CPUs, ${os.cpus()[0]?.model ?? ''})`,
    rows,
  );
}

// ---------------------------------------------------------------------------------------------
// big-rss and big-million

interface EndToEnd {
  inputBytes: number;
  lines: number;
  uploadMs: number;
  validateMs: number;
  runMs: number;
  finalizeMs: number;
  totalMs: number;
  status: string;
  counts: string;
  linesOk: string;
  idleHwmKb: number;
  afterUploadKb: number;
  afterValidateKb: number;
  peakHwmKb: number;
}

function vmHwmKb(pid: number): Promise<number> {
  return readFile(`/proc/${pid}/status`, 'utf8').then((text) => Number(/VmHWM:\s+(\d+)\s+kB/.exec(text)?.[1] ?? NaN));
}

/** Streams a results file and marks each `req-<i>` custom_id; returns [lines, bad lines]. */
async function markResults(response: Response, seen: Uint8Array): Promise<[number, number]> {
  const splitter = new JsonlLineSplitter();
  let lines = 0;
  let bad = 0;
  const onLine = (buf: Buffer, from: number, to: number) => {
    if (to <= from) return;
    lines++;
    const id = (JSON.parse(buf.toString('utf8', from, to)) as { custom_id?: string }).custom_id ?? '';
    const i = /^req-(\d+)$/.exec(id) ? Number(id.slice(4)) : -1;
    if (i < 0 || i >= seen.length) bad++;
    else seen[i]!++;
  };
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) splitter.pushRaw(chunk, onLine);
  splitter.endRaw(onLine);
  return [lines, bad];
}

async function endToEnd(label: string, lines: number, lineBytes: number, timeoutMs: number, cleanup: Cleanup): Promise<EndToEnd> {
  const dir = await tempDir(cleanup);
  const file = path.join(dir, 'input.jsonl');
  console.error(`[${label}] writing ${lines.toLocaleString('en-US')} lines of ${lineBytes} bytes to ${file} ...`);
  const { bytes, md5 } = await writeInput(file, lines, lineBytes);

  const service = await startServiceProcess({
    asNpmStart: true,
    env: {
      MAX_FILE_BYTES: String(Math.max(bytes + 1, 200 * MB)),
      MAX_REQUESTS_PER_BATCH: String(Math.max(lines, 50_000)),
      LOG_LEVEL: 'info',
    },
  });
  cleanup.add(`service ${label}`, () => service.removeDataDir());
  const idleHwmKb = await vmHwmKb(service.pid);
  const client = new OpenAI({ baseURL: service.baseURL, apiKey: 'bench', maxRetries: 0, timeout: 3_600_000 });

  try {
    const started = performance.now();
    console.error(`[${label}] uploading ${(bytes / MB).toFixed(0)} MB in ${Math.ceil(bytes / PART_BYTES)} parts ...`);
    const upload = await client.uploads.create({ filename: 'input.jsonl', purpose: 'batch', bytes, mime_type: 'application/jsonl' });
    const blob = await openAsBlob(file);
    const partIds: string[] = new Array(Math.ceil(bytes / PART_BYTES));
    let nextPart = 0;
    await Promise.all(
      [0, 1].map(async () => {
        for (let k = nextPart++; k < partIds.length; k = nextPart++) {
          const slice = blob.slice(k * PART_BYTES, Math.min(bytes, (k + 1) * PART_BYTES));
          const part = await client.uploads.parts.create(upload.id, { data: await toFile(slice, `part-${k}`) });
          partIds[k] = part.id;
        }
      }),
    );
    const completed = await client.uploads.complete(upload.id, { part_ids: partIds, md5 });
    const uploadMs = performance.now() - started;
    const afterUploadKb = await vmHwmKb(service.pid);
    let afterValidateKb = 0;

    let batch = await client.batches.create({
      input_file_id: completed.file!.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    let lastReport = performance.now();
    while (!['completed', 'failed', 'expired', 'cancelled'].includes(batch.status)) {
      if (performance.now() - started > timeoutMs)
        throw new Error(`batch ${batch.id} still ${batch.status} after ${formatSeconds(timeoutMs)}`);
      await new Promise((resolve) => setTimeout(resolve, 500));
      batch = await client.batches.retrieve(batch.id);
      if (!afterValidateKb && batch.status !== 'validating') afterValidateKb = await vmHwmKb(service.pid);
      if (performance.now() - lastReport > 10_000) {
        lastReport = performance.now();
        console.error(
          `[${label}]   ${batch.status}: ${batch.request_counts?.completed ?? 0}/${batch.request_counts?.total ?? 0}, peak RSS so far ${((await vmHwmKb(service.pid)) / 1024).toFixed(0)} MB`,
        );
      }
    }
    const totalMs = performance.now() - started;
    const peakHwmKb = await vmHwmKb(service.pid);

    console.error(`[${label}] ${batch.status}; reading the results ...`);
    const seen = new Uint8Array(lines);
    let outputLines = 0;
    let bad = 0;
    for (const id of [batch.output_file_id, batch.error_file_id]) {
      if (!id) continue;
      const [n, b] = await markResults(await client.files.content(id), seen);
      outputLines += n;
      bad += b;
    }
    let missing = 0;
    let doubled = 0;
    for (const count of seen) {
      if (count === 0) missing++;
      else if (count > 1) doubled++;
    }
    const s = (t: number | null | undefined) => (t ?? 0) * 1000;
    return {
      inputBytes: bytes,
      lines,
      uploadMs,
      validateMs: s(batch.in_progress_at) - s(batch.created_at),
      runMs: s(batch.finalizing_at) - s(batch.in_progress_at),
      finalizeMs: s(batch.completed_at ?? batch.failed_at) - s(batch.finalizing_at),
      totalMs,
      status: batch.status,
      counts: JSON.stringify(batch.request_counts),
      linesOk: `${missing === 0 && doubled === 0 && bad === 0 ? 'yes' : 'NO'} (${outputLines.toLocaleString('en-US')} result lines, ${missing} missing, ${doubled} doubled, ${bad} unexpected)`,
      idleHwmKb,
      afterUploadKb,
      afterValidateKb,
      peakHwmKb,
    };
  } catch (error) {
    console.error(`--- last service logs ---\n${service.logs().split('\n').slice(-30).join('\n')}`);
    throw error;
  } finally {
    await service.removeDataDir();
    await rm(file, { force: true });
  }
}

function e2eRows(run: EndToEnd): Array<[string, string]> {
  return [
    ['input', `${(run.inputBytes / MB).toFixed(0)} MB, ${run.lines.toLocaleString('en-US')} lines`],
    ['upload (Uploads API, 64 MB parts, md5)', `${formatSeconds(run.uploadMs)}  ${rate(run.inputBytes, run.uploadMs)}`],
    ['validate', `${formatSeconds(run.validateMs)}  (timestamps are whole seconds)`],
    [
      'run on batch-test-model',
      `${formatSeconds(run.runMs)}  ${Math.round(run.lines / Math.max(1, run.runMs / 1000)).toLocaleString('en-US')} req/s`,
    ],
    ['finalize', formatSeconds(run.finalizeMs)],
    ['upload to terminal status', formatSeconds(run.totalMs)],
    ['status, request_counts', `${run.status} ${run.counts}`],
    ['lines ok', run.linesOk],
    [
      'service peak RSS (VmHWM): idle / upload / validate / end',
      [run.idleHwmKb, run.afterUploadKb, run.afterValidateKb, run.peakHwmKb].map((kb) => `${(kb / 1024).toFixed(0)} MB`).join(' / '),
    ],
  ];
}

async function bigRss(options: BenchOptions, cleanup: Cleanup): Promise<void> {
  const sizes = (process.env.BIG_SIZES_MB ?? '20,200,2000')
    .split(',')
    .map(Number)
    .filter((n) => n > 0);
  const summary: Array<[string, string]> = [];
  for (const sizeMb of sizes) {
    const lines = Math.round((sizeMb * MB) / 2_000);
    const run = await endToEnd(`big-rss ${sizeMb} MB`, lines, 2_000, Math.max(options.timeoutMs, 3_600_000), cleanup);
    printTable(`\nbig-rss: ${sizeMb} MB`, e2eRows(run));
    summary.push([
      `${sizeMb} MB (${lines.toLocaleString('en-US')} lines)`,
      `peak RSS ${(run.peakHwmKb / 1024).toFixed(0)} MB (idle ${(run.idleHwmKb / 1024).toFixed(0)} MB), ${formatSeconds(run.totalMs)} end to end, lines ok: ${run.linesOk.split(' ')[0]}`,
    ]);
  }
  printTable(`\nbig-rss summary (Node ${process.version}, ${os.cpus().length} CPUs)`, summary);
}

async function bigMillion(options: BenchOptions, cleanup: Cleanup): Promise<void> {
  const run = await endToEnd('big-million', 1_000_000, 200, Math.max(options.timeoutMs, 3_600_000), cleanup);
  printTable(`\nbig-million: 1,000,000 requests on batch-test-model (Node ${process.version}, ${os.cpus().length} CPUs)`, e2eRows(run));
}

export const bigScenarios: Record<string, Scenario> = {
  'big-validate': { description: 'validator MB/s on 200 MB files (2,000- and 200-byte lines) beside split + JSON.parse', run: bigValidate },
  'big-rss': {
    description: 'service peak RSS at 20 MB, 200 MB and 2 GB inputs (BIG_SIZES_MB), end to end on batch-test-model',
    run: bigRss,
  },
  'big-million': { description: '1,000,000 short requests end to end on batch-test-model: time and every line once', run: bigMillion },
};
