// DeadLetters on SQS: a pipeline's destination writes that failed every retry, one message each, on
// the queue whose alarm tells an operator (infra/constructs/pipelines.ts).
import { SendMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import type { DeadLetters } from '../../ports.js';

export class SqsDeadLetters implements DeadLetters {
  constructor(private readonly options: { client: SQSClient; queueUrl: string }) {}

  async park(message: Record<string, unknown>): Promise<void> {
    await this.options.client.send(new SendMessageCommand({ QueueUrl: this.options.queueUrl, MessageBody: JSON.stringify(message) }));
  }
}
