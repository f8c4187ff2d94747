// The chunk worker, fed by SQS through an event source mapping with ReportBatchItemFailures: runs
// each message's chunk (many requests in flight), and reports the messages whose chunk failed so
// SQS delivers them again after the visibility timeout (and, after a few tries, to the dead-letter
// queue). A chunk delivered twice is recorded once (shared/work/run-chunk.ts).
import type { SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { errorMessage } from '../shared/log.js';
import type { ChunkMessage } from '../shared/ports.js';
import { runChunk } from '../shared/work/run-chunk.js';
import { lambdaHandler, MetricUnit, metrics } from './observability.js';
import { runtime, WORKER_STATUS_POLL_MS } from './runtime.js';
import { addUpstreamMetrics } from './upstream-metrics.js';

function parseMessage(record: SQSRecord): ChunkMessage {
  const message = JSON.parse(record.body) as ChunkMessage;
  if (typeof message?.batchId !== 'string' || typeof message.inputBlobKey !== 'string' || typeof message.chunk?.index !== 'number') {
    throw new Error('not a chunk message');
  }
  return message;
}

export const handler = lambdaHandler('worker', async (event: SQSEvent): Promise<SQSBatchResponse> => {
  const rt = await runtime();
  const { router, meter } = await rt.workerUpstreams();
  const deps = {
    meta: rt.meta,
    blobs: rt.blobs,
    lifecycle: rt.lifecycle,
    upstreams: router,
    clock: rt.clock,
    log: rt.log,
    statusPollMs: WORKER_STATUS_POLL_MS,
    checkpoints: rt.config.checkpoints,
  };
  // Records of one event run side by side; a malformed one fails alone (and ends in the dead-letter queue).
  const outcomes = await Promise.allSettled(event.Records.map(async (record) => runChunk(deps, parseMessage(record))));

  const batchItemFailures: SQSBatchResponse['batchItemFailures'] = [];
  outcomes.forEach((outcome, i) => {
    const record = event.Records[i]!;
    if (outcome.status === 'fulfilled') return;
    batchItemFailures.push({ itemIdentifier: record.messageId });
    rt.log.log('warn', 'chunk failed; SQS will deliver it again', {
      messageId: record.messageId,
      receiveCount: Number(record.attributes?.ApproximateReceiveCount ?? 0),
      error: errorMessage(outcome.reason),
    });
  });
  const m = metrics();
  m.addMetric('ChunksRun', MetricUnit.Count, event.Records.length - batchItemFailures.length);
  if (batchItemFailures.length > 0) m.addMetric('ChunksFailed', MetricUnit.Count, batchItemFailures.length);
  addUpstreamMetrics(m, meter.take());
  return { batchItemFailures };
});
