// The SQS WorkQueue against moto_server, under the WorkQueue contract: SendMessageBatch on the wire,
// a consumer that receives and deletes as Lambda's event source mapping does (a failed message is
// left to reappear after its visibility timeout), and a redrive policy that parks a message in the
// dead-letter queue after maxReceiveCount receives.
import {
  CreateQueueCommand,
  DeleteMessageCommand,
  GetQueueAttributesCommand,
  type Message,
  ReceiveMessageCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import { SqsWorkQueue } from '../../shared/adapters/aws/sqs-work-queue.js';
import type { ChunkMessage } from '../../shared/ports.js';
import { MOTO_SERVER, motoSkipNotice, startMoto } from '../support/moto.js';
import { workQueueContract } from './work-queue-contract.js';

const MAX_RECEIVES = 3;

async function consumeLoop(client: SQSClient, queueUrl: string, handler: (m: ChunkMessage) => Promise<void>, running: () => boolean) {
  while (running()) {
    let messages: Message[];
    try {
      ({ Messages: messages = [] } = await client.send(
        new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 1, VisibilityTimeout: 1 }),
      ));
    } catch (error) {
      if (running()) throw error;
      return;
    }
    await Promise.all(
      messages.map(async (m) => {
        try {
          await handler(JSON.parse(m.Body!) as ChunkMessage);
          await client.send(new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: m.ReceiptHandle }));
        } catch {
          // Left in flight: it reappears after the visibility timeout, as for a failed Lambda batch item.
        }
      }),
    );
  }
}

if (!MOTO_SERVER) {
  motoSkipNotice('the SQS WorkQueue contract');
} else {
  workQueueContract('SqsWorkQueue on moto', async () => {
    const moto = await startMoto();
    const client = moto.sqs();
    const name = `chunks-${Date.now()}`;
    const { QueueUrl: deadUrl } = await client.send(new CreateQueueCommand({ QueueName: `${name}-dead` }));
    const { Attributes } = await client.send(new GetQueueAttributesCommand({ QueueUrl: deadUrl, AttributeNames: ['QueueArn'] }));
    const { QueueUrl: queueUrl } = await client.send(
      new CreateQueueCommand({
        QueueName: name,
        Attributes: { RedrivePolicy: JSON.stringify({ deadLetterTargetArn: Attributes!.QueueArn, maxReceiveCount: MAX_RECEIVES }) },
      }),
    );
    let running = true;
    let loop: Promise<void> | undefined;
    return {
      queue: new SqsWorkQueue({ client, queueUrl: queueUrl! }),
      consume: (handler) => {
        loop = consumeLoop(client, queueUrl!, handler, () => running);
      },
      deadLetters: async () => {
        const { Messages = [] } = await client.send(
          new ReceiveMessageCommand({ QueueUrl: deadUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 0 }),
        );
        for (const m of Messages) await client.send(new DeleteMessageCommand({ QueueUrl: deadUrl, ReceiptHandle: m.ReceiptHandle }));
        return Messages.map((m) => JSON.parse(m.Body!) as ChunkMessage);
      },
      maxReceives: MAX_RECEIVES,
      close: async () => {
        running = false;
        await loop?.catch(() => undefined);
        await moto.close();
      },
    };
  });
}
