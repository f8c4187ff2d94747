// `npm run cost -- [--requests N] [--chunk R] [--in-flight C] [--latency S] [--worker-mb M] [--polls P]`
//
// What one batch costs on AWS, counted, not guessed: the real Lambda handlers run in-process over
// the AWS adapters (test/support/aws-harness.ts: DynamoDB on dynalite, S3 on s3rver, stand-ins for
// SQS and Step Functions), and every AWS call they make is counted by service and operation,
// every Lambda invocation timed, every log byte weighed. The batch runs on batch-test-model (no
// upstream); the upstream's latency is then modelled: a worker invocation holding C requests in
// flight lasts about ceil(R / C) × latency longer than it did here. Priced at us-east-1 list
// prices, per 1,000,000 requests, beside a design that invokes one Lambda per request and holds
// it for the upstream's latency. Prints figures; asserts nothing.

import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { logger } from '../functions/observability.js';
import { fileRecord } from '../shared/batch/files.js';
import { blobKeys } from '../shared/batch/keys.js';
import { newFileId } from '../shared/ids.js';
import { DEFAULT_CHECKPOINTS } from '../shared/work/checkpoints.js';
import { AwsHarness, type FunctionName } from '../test/support/aws-harness.js';

const PRICE = {
  transition: 0.025 / 1_000,
  lambdaGbSecond: 0.0000133334, // arm64
  lambdaRequest: 0.2 / 1_000_000,
  sqsRequest: 0.4 / 1_000_000,
  wru: 0.625 / 1_000_000,
  rru: 0.125 / 1_000_000,
  s3Put: 0.005 / 1_000,
  s3Get: 0.0004 / 1_000,
  httpApiRequest: 1.0 / 1_000_000,
  secretsCall: 0.05 / 10_000,
  logsGb: 0.5,
};

/** Memory of each function, as infra/constructs sets it (the worker's is a flag). */
const MEMORY_MB: Record<FunctionName, number> = {
  api: 512,
  validate: 1024,
  enqueue: 1024,
  'wait-for-chunks': 256,
  finalize: 1024,
  worker: 1024,
  'start-sweep': 256,
  'file-reaper': 256,
  // Not invoked by the cost scenario (no pipelines, no events drain).
  'pipeline-run': 512,
  events: 512,
};
/** START, END and REPORT lines Lambda itself writes per invocation. */
const PLATFORM_LOG_BYTES = 350;
const S3_PUT_CLASS = new Set([
  'PutObject',
  'CreateMultipartUpload',
  'UploadPart',
  'CompleteMultipartUpload',
  'ListObjectsV2',
  'CopyObject',
]);
const S3_FREE = new Set(['DeleteObjects', 'DeleteObject', 'AbortMultipartUpload']);

/** Checkpoint objects the run stored (S3 PutObject under a chunk's ckpt- keys). */
let checkpointPuts = 0;

const { values } = parseArgs({
  options: {
    requests: { type: 'string', default: '10000' },
    chunk: { type: 'string', default: '500' },
    'in-flight': { type: 'string', default: '250' },
    latency: { type: 'string', default: '2' },
    'worker-mb': { type: 'string', default: String(MEMORY_MB.worker) },
    polls: { type: 'string', default: '60' },
  },
});
const N = Number(values.requests);
const CHUNK = Number(values.chunk);
const IN_FLIGHT = Number(values['in-flight']);
const LATENCY_S = Number(values.latency);
const POLLS = Number(values.polls);
MEMORY_MB.worker = Number(values['worker-mb']);

async function writeRequestsFile(filePath: string, n: number, line: (i: number) => unknown): Promise<void> {
  const out = createWriteStream(filePath);
  for (let i = 0; i < n; i++) if (!out.write(`${JSON.stringify(line(i))}\n`)) await once(out, 'drain');
  out.end();
  await once(out, 'finish');
}

async function main() {
  process.env.POWERTOOLS_LOG_LEVEL ??= 'INFO';
  const dir = await mkdtemp(path.join(os.tmpdir(), 'batch-cost-'));
  const input = path.join(dir, 'input.jsonl');
  await writeRequestsFile(input, N, (i) => ({
    custom_id: `req-${i}`,
    method: 'POST',
    url: '/v1/chat/completions',
    body: { model: 'batch-test-model', messages: [{ role: 'user', content: `question ${i}: what is ${i} + ${i}?` }] },
  }));
  const inputBytes = (await stat(input)).size;

  const aws = await AwsHarness.start({
    onAwsCall: (call) => {
      if (call.service === 'S3' && call.command === 'PutObject' && String(call.input.Key).includes('/ckpt-')) checkpointPuts += 1;
    },
    env: {
      CHUNK_MAX_REQUESTS: String(CHUNK),
      CHUNK_MAX_BYTES: String(64 * 1024 * 1024),
      MAX_REQUESTS_PER_BATCH: String(Math.max(N, 50_000)),
    },
    // One worker at a time: the in-process time of an invocation is then not inflated by its neighbours.
    workerConcurrency: 1,
    visibilityTimeoutMs: 10 * 60_000,
  });
  // Lambda writes what a function prints to CloudWatch Logs: weigh it (logs and EMF metrics), show none of it.
  let logBytes = 0;
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((chunk: string | Uint8Array) => {
    logBytes += typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
    return true;
  }) as typeof process.stdout.write;
  logger().setLogLevel('INFO');

  let batchStatus = '';
  let wallMs = 0;
  try {
    const openai = aws.openai(await aws.createKey('cost'));
    const started = performance.now();
    let fileId: string;
    if (inputBytes <= 4 * 1024 * 1024) {
      fileId = (await openai.files.create({ file: createReadStream(input), purpose: 'batch' })).id;
    } else {
      // Past API Gateway's payload limit a file arrives by the Uploads API or a presigned PUT:
      // either way its bytes go to S3 in parts, as here.
      fileId = newFileId();
      const { bytes } = await aws.blobs.put(blobKeys.file(fileId), createReadStream(input));
      await aws.meta.putFile(
        fileRecord(
          { id: fileId, project: 'cost', filename: 'input.jsonl', purpose: 'batch', bytes, expiresAfterSeconds: 86_400 },
          Date.now(),
        ),
      );
    }
    const created = await openai.batches.create({ input_file_id: fileId, endpoint: '/v1/chat/completions', completion_window: '24h' });
    let batch = created;
    while (!['completed', 'failed', 'expired', 'cancelled'].includes(batch.status)) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      batch = await openai.batches.retrieve(created.id);
    }
    batchStatus = `${batch.status} ${JSON.stringify(batch.request_counts)}`;
    for (const id of [batch.output_file_id, batch.error_file_id]) if (id) await (await openai.files.content(id)).arrayBuffer();
    await aws.settle();
    wallMs = performance.now() - started;
  } finally {
    process.stdout.write = write;
    await aws.close();
    await rm(dir, { recursive: true, force: true });
  }
  report(aws, { batchStatus, wallMs, logBytes, inputBytes });
}

function report(aws: AwsHarness, run: { batchStatus: string; wallMs: number; logBytes: number; inputBytes: number }) {
  const perMillion = 1_000_000 / N;
  const chunks = Math.ceil(N / CHUNK);
  const call = (name: string) => aws.awsCalls.get(name) ?? 0;
  const calls = [...aws.awsCalls].sort(([a], [b]) => a.localeCompare(b));
  const invocations = [...aws.invocations];

  // Client polls are the client's choice: the run's own polling is left out and POLLS a batch priced instead.
  const polls = aws.apiExchanges.filter((e) => e.method === 'GET' && /\/batches\/[^/]+$/.test(e.path)).length;
  const apiRequests = aws.apiExchanges.length - polls + POLLS;

  const upstreamSecondsPerWorker = Math.ceil(CHUNK / IN_FLIGHT) * LATENCY_S;
  const lambdaRows = invocations.map(([name, stats]) => {
    // The API function serves the priced polls, not the run's own.
    const count = name === 'api' ? apiRequests : stats.count;
    const measured = (stats.totalMs / 1000) * (count / stats.count);
    // A redelivered or skipped worker run costs its own time only; the chunks are what wait upstream.
    const upstreamWait = name === 'worker' ? Math.min(stats.count, chunks) * upstreamSecondsPerWorker : 0;
    const seconds = measured + upstreamWait;
    const gbSeconds = seconds * (MEMORY_MB[name] / 1024);
    return { name, count, seconds, gbSeconds };
  });
  const lambdaInvocations = lambdaRows.reduce((sum, row) => sum + row.count, 0);
  const lambdaGbSeconds = lambdaRows.reduce((sum, row) => sum + row.gbSeconds, 0);

  const sqsRequests = call('SQS.SendMessageBatch') + call('SQS.ReceiveMessage') + call('SQS.DeleteMessageBatch');
  // dynalite reports table capacity only; every item this run writes is also in the byProject
  // index (projection ALL), which DynamoDB bills again.
  const wru = aws.capacity.write * 2;
  const rru = aws.capacity.read;
  let s3Put = 0;
  let s3Get = 0;
  for (const [name, count] of calls) {
    if (!name.startsWith('S3.')) continue;
    const op = name.slice(3);
    if (S3_PUT_CLASS.has(op)) s3Put += count;
    else if (!S3_FREE.has(op)) s3Get += count;
  }
  const logGb = (run.logBytes + lambdaInvocations * PLATFORM_LOG_BYTES) / 1024 ** 3;

  const rows: [string, string, number][] = [
    ['Step Functions state transitions', `${aws.sfn.transitions}`, aws.sfn.transitions * PRICE.transition],
    ['Lambda requests', `${lambdaInvocations}`, lambdaInvocations * PRICE.lambdaRequest],
    ['Lambda GB-seconds (arm64)', lambdaGbSeconds.toFixed(1), lambdaGbSeconds * PRICE.lambdaGbSecond],
    ['SQS requests', `${sqsRequests}`, sqsRequests * PRICE.sqsRequest],
    ['DynamoDB write request units', wru.toFixed(0), wru * PRICE.wru],
    ['DynamoDB read request units', rru.toFixed(0), rru * PRICE.rru],
    ['S3 PUT, LIST (per request)', `${s3Put}`, s3Put * PRICE.s3Put],
    ['S3 GET, HEAD (per request)', `${s3Get}`, s3Get * PRICE.s3Get],
    [`API Gateway HTTP API requests (incl. ${POLLS} polls)`, `${apiRequests}`, apiRequests * PRICE.httpApiRequest],
    ['Secrets Manager calls', `${call('SecretsManager.GetSecretValue')}`, call('SecretsManager.GetSecretValue') * PRICE.secretsCall],
    ['CloudWatch Logs ingested (GB)', logGb.toFixed(5), logGb * PRICE.logsGb],
  ];
  const batchTotal = rows.reduce((sum, [, , dollars]) => sum + dollars, 0);
  const total = batchTotal * perMillion;

  // The per-request design: the same batch bookkeeping, but one worker invocation per request,
  // held for the upstream's latency, and a queue message and a counter write per request.
  const perRequestWorker = (memoryMb: number) => {
    const lambda = PRICE.lambdaRequest + LATENCY_S * (memoryMb / 1024) * PRICE.lambdaGbSecond;
    const queue = (0.1 + 1 + 1) * PRICE.sqsRequest; // batched send, receive, delete
    const counter = 2 * PRICE.wru; // one conditional write per request, and its index copy
    return (lambda + queue + counter) * 1_000_000;
  };
  const workerRow = lambdaRows.find((row) => row.name === 'worker');
  const workerDollars = (workerRow?.gbSeconds ?? 0) * PRICE.lambdaGbSecond + (workerRow?.count ?? 0) * PRICE.lambdaRequest;
  const bookkeeping = total - workerDollars * perMillion;
  const perRequestSame = bookkeeping + perRequestWorker(MEMORY_MB.worker);
  const perRequestSmall = bookkeeping + perRequestWorker(128);

  const money = (d: number) => (d >= 1 ? `$${d.toFixed(2)}` : `$${d.toFixed(4)}`);
  const line = (cells: string[], widths: number[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  const widths = [46, 12, 14, 16];

  console.log(`\nCost of a batch of ${N.toLocaleString('en-US')} requests on AWS (us-east-1 list prices), counted in-process`);
  console.log(
    `  run: ${run.batchStatus}; input ${(run.inputBytes / 1e6).toFixed(1)} MB; ${chunks} chunks of ${CHUNK}; ${(run.wallMs / 1000).toFixed(1)} s in-process`,
  );
  console.log(`  model: upstream latency ${LATENCY_S} s, ${IN_FLIGHT} requests in flight per worker invocation (UPSTREAM_CONCURRENCY),`);
  console.log(
    `         so a worker invocation waits ceil(${CHUNK}/${IN_FLIGHT}) × ${LATENCY_S} s = ${upstreamSecondsPerWorker} s on the upstream, plus its measured time`,
  );
  console.log(
    `  memory: ${Object.entries(MEMORY_MB)
      .map(([name, mb]) => `${name} ${mb} MB`)
      .join(', ')}\n`,
  );
  console.log(line(['item', 'count', '$ per batch', '$ per 1M req'], widths));
  console.log(line(['-'.repeat(46), '-'.repeat(12), '-'.repeat(14), '-'.repeat(16)], widths));
  for (const [item, count, dollars] of rows) console.log(line([item, count, money(dollars), money(dollars * perMillion)], widths));
  console.log(line(['-'.repeat(46), '', '', '-'.repeat(16)], widths));
  console.log(line(['total, this design', '', money(batchTotal), money(total)], widths));
  console.log(line([`one Lambda per request (${MEMORY_MB.worker} MB, held ${LATENCY_S} s)`, '', '', money(perRequestSame)], widths));
  console.log(line([`one Lambda per request (128 MB, held ${LATENCY_S} s)`, '', '', money(perRequestSmall)], widths));
  console.log(
    `\n  ${(perRequestSame / total).toFixed(0)}× cheaper than one ${MEMORY_MB.worker} MB Lambda per request, ${(perRequestSmall / total).toFixed(0)}× than one 128 MB Lambda per request; goal: ≤ $0.30 per million and ≥ 50×.`,
  );

  console.log('\nLambda invocations (measured in-process; the worker plus the modelled upstream wait)');
  for (const row of lambdaRows) {
    console.log(
      `  ${row.name.padEnd(16)} ${String(row.count).padStart(6)} invocations  ${row.seconds.toFixed(1).padStart(8)} s  ${row.gbSeconds.toFixed(1).padStart(8)} GB-s`,
    );
  }
  console.log('\nAWS calls by operation (this batch)');
  for (const [name, count] of calls) console.log(`  ${name.padEnd(48)} ${String(count).padStart(7)}`);
  console.log(
    `  DynamoDB capacity reported by dynalite: ${aws.capacity.write.toFixed(0)} WCU (×2 above for the index), ${aws.capacity.read.toFixed(1)} RCU`,
  );

  console.log('\nWorker $ per 1M requests by requests in flight per invocation (its GB-s and invocations only)');
  const measuredPerChunk = workerRow
    ? (workerRow.seconds - Math.min(workerRow.count, chunks) * upstreamSecondsPerWorker) / Math.max(1, workerRow.count)
    : 0;
  for (const memory of [512, 1024]) {
    const cells = [64, 128, 250, 500].map((inFlight) => {
      const seconds = measuredPerChunk + Math.ceil(CHUNK / inFlight) * LATENCY_S;
      const dollars = (1_000_000 / CHUNK) * (seconds * (memory / 1024) * PRICE.lambdaGbSecond + PRICE.lambdaRequest);
      return `${inFlight} in flight ${money(dollars)}`;
    });
    console.log(`  ${String(memory).padStart(4)} MB: ${cells.join('   ')}`);
  }
  reportCheckpoints(perMillion);
  console.log('\nNot per request, so not above: custom metrics ($0.30 per metric-month), alarms, the dashboard, the event');
  console.log("source mapping's idle long polls of SQS (~$0.25/month), S3 and DynamoDB storage, data transfer out.");
}

await main();

/**
 * What the checkpoint cadence costs, and what a crash then redoes. The run above uses
 * batch-test-model, which answers at once, so its checkpoints are not those of a real upstream:
 * here they are modelled. A chunk with C requests in flight at latency L finishes C / L lines a
 * second; a checkpoint is written once half as many lines wait as are in flight, or once the
 * interval has passed, or once CHECKPOINT_LINES wait, whichever comes first. A crash redoes the
 * requests in flight and the lines not yet saved (at most one checkpoint's worth).
 */
function reportCheckpoints(perMillion: number) {
  const { intervalMs, maxLines } = DEFAULT_CHECKPOINTS;
  /** Lines a checkpoint holds, now and with the cadence before (every 2 s or 500 lines). */
  const linesPerCheckpoint = (inFlight: number, latencyS: number, rule: 'now' | 'before') => {
    const perSecond = inFlight / latencyS;
    if (rule === 'before') return Math.min(500, Math.max(1, perSecond * 2));
    return Math.min(maxLines, Math.ceil(inFlight / 2), Math.max(1, perSecond * (intervalMs / 1000)));
  };
  console.log(
    `\nCheckpoints per 1M requests (S3 PutObject; DynamoDB writes none: a chunk's outcome is one conditional UpdateItem, ${(1_000_000 / CHUNK).toFixed(0)} per 1M)`,
  );
  console.log(
    `  this run: ${checkpointPuts} checkpoint PUTs (${(checkpointPuts * perMillion).toFixed(0)} per 1M; batch-test-model answers at once)`,
  );
  console.log(
    `  modelled: now a checkpoint every ${intervalMs / 1000} s, ${maxLines} lines or half the chunk's requests in flight; before every 2 s or 500 lines`,
  );
  for (const latencyS of [...new Set([LATENCY_S, 0.02])]) {
    for (const inFlight of [...new Set([16, 64, IN_FLIGHT])].sort((a, b) => a - b)) {
      const c = Math.min(inFlight, CHUNK);
      const cells = (['now', 'before'] as const).map((rule) => {
        const lines = linesPerCheckpoint(c, latencyS, rule);
        const puts = 1_000_000 / lines;
        const redo = c + Math.ceil(lines);
        return `${rule} ${puts.toFixed(0).padStart(7)} PUTs $${(puts * PRICE.s3Put).toFixed(4)}, a crash redoes ≤ ${String(redo).padStart(4)} (${(redo / c).toFixed(1)}×)`;
      });
      console.log(`  ${String(latencyS * 1000).padStart(5)} ms, ${String(c).padStart(3)} in flight: ${cells.join('   ')}`);
    }
  }
}
