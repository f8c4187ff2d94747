// The webhook delivery function, fed by its own SQS queue (one message per attempt, delayed until
// due): makes the attempt (shared/events/deliveries.ts) and, when it failed, puts the next one on
// the queue with its delay. The API never waits on a receiver. A message whose handling throws
// (the MetaStore or SQS failing, not the receiver) is retried by SQS and, after a few receives,
// parked in the dead-letter queue, which has an alarm; the delivery itself stays in the MetaStore
// and the events function puts it back on the queue once it is overdue.
import sqsPartialBatchFailure from '@middy/sqs-partial-batch-failure';
import type { SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import type { DeliveryMessage } from '../shared/adapters/aws/sqs-delivery-queue.js';
import { attemptDelivery, newDeliveryStats } from '../shared/events/deliveries.js';
import { errorMessage } from '../shared/log.js';
import { domainLogger, MetricUnit, metrics, shapedLambdaHandler } from './observability.js';
import { runtime } from './runtime.js';

function parseMessage(record: SQSRecord): DeliveryMessage {
  const message = JSON.parse(record.body) as DeliveryMessage;
  if (typeof message?.deliveryId !== 'string') throw new Error('not a webhook delivery message');
  return message;
}

export const handler = shapedLambdaHandler<SQSEvent, SQSBatchResponse, PromiseSettledResult<void>[]>(
  'webhook-delivery',
  async (event) => {
    const rt = await runtime();
    const queue = rt.deliveryQueue;
    if (!queue) throw new Error('the webhook delivery function needs WEBHOOK_QUEUE_URL');
    const stats = newDeliveryStats();
    const deps = {
      meta: rt.meta,
      clock: rt.clock,
      log: rt.log,
      sender: rt.domain.webhookSender,
      retry: { baseMs: rt.config.webhooks.retryBaseMs, forMs: rt.config.webhooks.retryForMs },
      claimMs: rt.config.webhooks.timeoutMs + 5_000,
      stats,
    };
    // Each message is one delivery: they run side by side, so a slow receiver holds only its own.
    const outcomes = await Promise.allSettled(
      event.Records.map(async (record) => {
        const { deliveryId } = parseMessage(record);
        const outcome = await attemptDelivery(deps, deliveryId);
        if (outcome.outcome === 'retry' || outcome.outcome === 'not_due') {
          await queue.schedule([{ id: deliveryId, atMs: outcome.nextAttemptAtMs }], rt.clock.now());
        }
      }),
    );
    const m = metrics();
    if (stats.delivered > 0) m.addMetric('WebhooksDelivered', MetricUnit.Count, stats.delivered);
    if (stats.retried > 0) m.addMetric('WebhookAttemptsFailed', MetricUnit.Count, stats.retried);
    if (stats.givenUp > 0) m.addMetric('WebhookDeliveriesGivenUp', MetricUnit.Count, stats.givenUp);
    return outcomes;
  },
  sqsPartialBatchFailure({
    logger: (reason: unknown, record: SQSRecord) =>
      domainLogger().log('warn', 'webhook delivery message failed; SQS will deliver it again', {
        messageId: record.messageId,
        error: errorMessage(reason),
      }),
  }),
);
