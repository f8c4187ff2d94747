// The DeliveryQueue on SQS: one message per delivery attempt ({"deliveryId": ...}), delayed until
// the attempt is due. SQS delays at most 15 minutes: a later attempt gets a message at 15 minutes,
// which the delivery function sees is not due yet and schedules again.
import { SendMessageBatchCommand, type SQSClient } from '@aws-sdk/client-sqs';
import type { DeliveryQueue } from '../../ports.js';

export const MAX_DELAY_SECONDS = 900;
const ENTRIES_PER_CALL = 10;

export interface DeliveryMessage {
  deliveryId: string;
}

export class SqsDeliveryQueue implements DeliveryQueue {
  constructor(private readonly options: { client: SQSClient; queueUrl: string }) {}

  async schedule(deliveries: readonly { id: string; atMs: number }[], nowMs: number): Promise<void> {
    for (let i = 0; i < deliveries.length; i += ENTRIES_PER_CALL) {
      const slice = deliveries.slice(i, i + ENTRIES_PER_CALL);
      const out = await this.options.client.send(
        new SendMessageBatchCommand({
          QueueUrl: this.options.queueUrl,
          Entries: slice.map((delivery, index) => ({
            Id: String(index),
            MessageBody: JSON.stringify({ deliveryId: delivery.id } satisfies DeliveryMessage),
            DelaySeconds: Math.min(MAX_DELAY_SECONDS, Math.max(0, Math.ceil((delivery.atMs - nowMs) / 1000))),
          })),
        }),
      );
      if (out.Failed && out.Failed.length > 0) {
        throw new Error(`SQS refused ${out.Failed.length} delivery message(s): ${out.Failed[0]!.Code ?? 'unknown'}`);
      }
    }
  }
}
