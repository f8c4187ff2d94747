// The chunk worker, fed by SQS through an event source mapping with ReportBatchItemFailures: runs
// each message's chunk (many requests in flight), and reports the messages whose chunk failed so
// SQS delivers them again after the visibility timeout. On the last receive before the dead-letter
// queue, a chunk that fails again is given up instead: its lines are recorded as failed and the
// batch goes on to end failed, rather than wait for its window. A chunk delivered twice is recorded
// once (shared/work/run-chunk.ts). The run is bounded by the invocation's remaining time: a chunk
// not finished well before Lambda's timeout is checkpointed and sent back to the queue as a new
// message (due in a second, not counted as a failed receive), and its next run resumes from there.
import sqsPartialBatchFailure from '@middy/sqs-partial-batch-failure';
import type { SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { errorMessage } from '../shared/log.js';
import type { ChunkMessage } from '../shared/ports.js';
import { noRedaction, redactingLogger } from '../shared/upstream/redact.js';
import { giveUpChunk, runChunk } from '../shared/work/run-chunk.js';
import { CHUNK_MAX_RECEIVES } from './contract.js';
import { domainLogger, MetricUnit, metrics, shapedLambdaHandler } from './observability.js';
import { runtime, WORKER_STATUS_POLL_MS } from './runtime.js';
import { addUpstreamMetrics } from './upstream-metrics.js';

function parseMessage(record: SQSRecord): ChunkMessage {
  const message = JSON.parse(record.body) as ChunkMessage;
  if (typeof message?.batchId !== 'string' || typeof message.inputBlobKey !== 'string' || typeof message.chunk?.index !== 'number') {
    throw new Error('not a chunk message');
  }
  return message;
}

export const handler = shapedLambdaHandler<SQSEvent, SQSBatchResponse, PromiseSettledResult<void>[]>(
  'worker',
  async (event, context) => {
    const rt = await runtime();
    const { router, meter } = await rt.workerUpstreams();
    // No upstream key reaches a log line (an error message could carry one).
    const log = redactingLogger(rt.log, router.redactor ?? noRedaction);
    const deps = rt.domain.worker(rt.lifecycle, { upstreams: router, responses: rt.responses, log, statusPollMs: WORKER_STATUS_POLL_MS });
    // The invocation's end, by the domain's clock: the chunk is handed back before it.
    const deadlineMs = deps.clock.now() + context.getRemainingTimeInMillis();
    let givenUp = 0;
    let handedBack = 0;
    const run = async (record: SQSRecord) => {
      const message = parseMessage(record);
      try {
        if ((await runChunk(deps, message, { deadlineMs })) === 'handed_back') handedBack += 1;
      } catch (error) {
        if (receives(record) < CHUNK_MAX_RECEIVES) throw error;
        await giveUpChunk(deps, message, error);
        givenUp += 1;
      }
    };
    // Records of one event run side by side; a malformed one fails alone (and ends in the dead-letter
    // queue). The middleware turns the rejected ones into batchItemFailures.
    const outcomes = await Promise.allSettled(event.Records.map(run));
    const failed = outcomes.filter((outcome) => outcome.status === 'rejected').length;
    const m = metrics();
    m.addMetric('ChunksRun', MetricUnit.Count, event.Records.length - failed);
    if (failed > 0) m.addMetric('ChunksFailed', MetricUnit.Count, failed);
    if (givenUp > 0) m.addMetric('ChunksGivenUp', MetricUnit.Count, givenUp);
    if (handedBack > 0) m.addMetric('ChunksHandedBack', MetricUnit.Count, handedBack);
    addUpstreamMetrics(m, meter.take());
    return outcomes;
  },
  sqsPartialBatchFailure({
    logger: (reason: unknown, record: SQSRecord) =>
      domainLogger().log('warn', 'chunk failed; SQS will deliver it again', {
        messageId: record.messageId,
        receiveCount: receives(record),
        error: errorMessage(reason),
      }),
  }),
);

const receives = (record: SQSRecord) => Number(record.attributes?.ApproximateReceiveCount ?? 0);
