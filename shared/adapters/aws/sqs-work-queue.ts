// The WorkQueue on SQS: chunk messages go out ten to a SendMessageBatch call (SQS's maximum),
// and entries SQS reports as failed are sent again with backoff. SQS then delivers each message at
// least once to the worker Lambda through the event source mapping, and redelivers what a worker
// did not acknowledge after the visibility timeout; the chunk's once-only record makes that safe.
// Each message carries its project as MessageGroupId: on a standard queue that makes it an SQS fair
// queue, whose tenants are the projects (what that does and does not promise: README, "Fair sharing").

import { createHash } from 'node:crypto';
import { SendMessageBatchCommand, type SendMessageBatchRequestEntry, type SQSClient } from '@aws-sdk/client-sqs';
import type { ChunkMessage, WorkQueue } from '../../ports.js';

export const SQS_BATCH_SIZE = 10;
/** SQS's longest DelaySeconds. */
const MAX_DELAY_SECONDS = 900;

export interface SqsWorkQueueOptions {
  client: SQSClient;
  queueUrl: string;
  /** Rounds of re-sending failed entries before giving up. */
  maxAttempts?: number;
  /** SendMessageBatch calls in flight at once. */
  concurrency?: number;
  sleep?: (ms: number) => Promise<void>;
}

/**
 * SQS takes 1..128 printable ASCII characters as a MessageGroupId: a project name that is not
 * that becomes a digest of it (still one tenant per project).
 */
export function messageGroupId(project: string): string {
  return /^[\x21-\x7e]{1,128}$/.test(project) ? project : `p-${createHash('sha256').update(project).digest('hex').slice(0, 40)}`;
}

export class SqsWorkQueue implements WorkQueue {
  private readonly maxAttempts: number;
  private readonly concurrency: number;
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(private readonly options: SqsWorkQueueOptions) {
    this.maxAttempts = options.maxAttempts ?? 5;
    this.concurrency = Math.max(1, options.concurrency ?? 8);
    this.sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
  }

  async enqueue(messages: ChunkMessage[], options: { delayMs?: number } = {}): Promise<void> {
    const delay = options.delayMs ? { DelaySeconds: Math.min(MAX_DELAY_SECONDS, Math.ceil(options.delayMs / 1_000)) } : {};
    const groups: SendMessageBatchRequestEntry[][] = [];
    for (let i = 0; i < messages.length; i += SQS_BATCH_SIZE) {
      // Entry ids only need to be unique within one call.
      groups.push(
        messages.slice(i, i + SQS_BATCH_SIZE).map((message, j) => ({
          Id: String(i + j),
          MessageBody: JSON.stringify(message),
          ...(message.project ? { MessageGroupId: messageGroupId(message.project) } : {}),
          ...delay,
        })),
      );
    }
    let next = 0;
    const lane = async () => {
      while (next < groups.length) await this.sendGroup(groups[next++]!);
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, groups.length) }, lane));
  }

  private async sendGroup(entries: SendMessageBatchRequestEntry[]): Promise<void> {
    let pending = entries;
    for (let attempt = 1; ; attempt++) {
      const out = await this.options.client.send(new SendMessageBatchCommand({ QueueUrl: this.options.queueUrl, Entries: pending }));
      const failed = new Set((out.Failed ?? []).map((f) => f.Id));
      if (failed.size === 0) return;
      const first = out.Failed![0]!;
      // A sender's fault (a malformed entry) will not pass on a second try.
      if (out.Failed!.some((f) => f.SenderFault) || attempt >= this.maxAttempts) {
        throw new Error(`SQS refused ${failed.size} chunk message(s): ${first.Code}: ${first.Message ?? ''}`.trim());
      }
      pending = pending.filter((entry) => failed.has(entry.Id));
      await this.sleep(Math.random() * Math.min(5_000, 100 * 2 ** attempt));
    }
  }
}
