// The exact SQS calls SqsWorkQueue sends.

import { SendMessageBatchCommand, SQSClient } from '@aws-sdk/client-sqs';
import { mockClient } from 'aws-sdk-client-mock';
import { beforeEach, describe, expect, it } from 'vitest';
import { messageGroupId, SqsWorkQueue } from '../../shared/adapters/aws/sqs-work-queue.js';
import type { ChunkMessage } from '../../shared/ports.js';

const QUEUE_URL = 'https://sqs.us-east-1.amazonaws.com/123456789012/chunks';
const sqs = mockClient(SQSClient);
const client = new SQSClient({ region: 'us-east-1', credentials: { accessKeyId: 'x', secretAccessKey: 'x' } });
const queue = new SqsWorkQueue({ client, queueUrl: QUEUE_URL, sleep: async () => {} });

const message = (index: number): ChunkMessage => ({
  batchId: 'batch_1',
  inputBlobKey: 'files/file-1',
  chunk: { index, start: index * 100, end: index * 100 + 100, requests: 3 },
});

beforeEach(() => {
  sqs.reset();
});

describe('SqsWorkQueue', () => {
  it('sends ten messages a call, each body the JSON chunk message', async () => {
    sqs.on(SendMessageBatchCommand).resolves({ Successful: [], Failed: [] });
    const messages = Array.from({ length: 23 }, (_, i) => message(i));
    await queue.enqueue(messages);
    const calls = sqs.commandCalls(SendMessageBatchCommand).map((c) => c.args[0].input);
    expect(calls.map((c) => c.Entries!.length).sort()).toEqual([10, 10, 3]);
    const entries = calls.flatMap((c) => c.Entries!);
    expect(calls.every((c) => c.QueueUrl === QUEUE_URL)).toBe(true);
    expect(entries.map((e) => JSON.parse(e.MessageBody!)).sort((a, b) => a.chunk.index - b.chunk.index)).toEqual(messages);
    for (const call of calls) expect(new Set(call.Entries!.map((e) => e.Id)).size).toBe(call.Entries!.length);
  });

  it('gives each message its project as MessageGroupId (SQS fair queues), a digest for a name SQS would refuse', async () => {
    sqs.on(SendMessageBatchCommand).resolves({ Successful: [], Failed: [] });
    await queue.enqueue([{ ...message(0), project: 'team-a' }, { ...message(1), project: 'équipe b' }, message(2)]);
    const entries = sqs.commandCalls(SendMessageBatchCommand).flatMap((c) => c.args[0].input.Entries!);
    expect(entries[0]!.MessageGroupId).toBe('team-a');
    expect(entries[1]!.MessageGroupId).toMatch(/^p-[0-9a-f]{40}$/);
    expect(entries[1]!.MessageGroupId).toBe(messageGroupId('équipe b'));
    // A message of an older version names no project: it is its own tenant, as SQS treats it.
    expect(entries[2]!.MessageGroupId).toBeUndefined();
  });

  it('sends a delay in whole seconds, at most 15 minutes', async () => {
    sqs.on(SendMessageBatchCommand).resolves({ Successful: [], Failed: [] });
    await queue.enqueue([message(0)], { delayMs: 1_200 });
    await queue.enqueue([message(1)], { delayMs: 3_600_000 });
    const entries = sqs.commandCalls(SendMessageBatchCommand).flatMap((c) => c.args[0].input.Entries!);
    expect(entries.map((e) => e.DelaySeconds)).toEqual([2, 900]);
  });

  it('sends nothing for no messages', async () => {
    await queue.enqueue([]);
    expect(sqs.calls()).toHaveLength(0);
  });

  it('sends the failed entries again, and only those', async () => {
    sqs
      .on(SendMessageBatchCommand)
      .resolvesOnce({
        Failed: [
          { Id: '1', Code: 'InternalError', SenderFault: false },
          { Id: '3', Code: 'InternalError', SenderFault: false },
        ],
      })
      .resolves({});
    await queue.enqueue([message(0), message(1), message(2), message(3)]);
    const calls = sqs.commandCalls(SendMessageBatchCommand).map((c) => c.args[0].input);
    expect(calls).toHaveLength(2);
    expect(calls[1]!.Entries!.map((e) => [e.Id, JSON.parse(e.MessageBody!).chunk.index])).toEqual([
      ['1', 1],
      ['3', 3],
    ]);
  });

  it('gives up after its attempts, and at once on a sender fault', async () => {
    sqs.on(SendMessageBatchCommand).resolves({ Failed: [{ Id: '0', Code: 'ServiceUnavailable', SenderFault: false }] });
    await expect(queue.enqueue([message(0)])).rejects.toThrow('ServiceUnavailable');
    expect(sqs.commandCalls(SendMessageBatchCommand)).toHaveLength(5);

    sqs.reset();
    sqs.on(SendMessageBatchCommand).resolves({ Failed: [{ Id: '0', Code: 'InvalidMessageContents', SenderFault: true }] });
    await expect(queue.enqueue([message(0)])).rejects.toThrow('InvalidMessageContents');
    expect(sqs.commandCalls(SendMessageBatchCommand)).toHaveLength(1);
  });

  it('lets a failed call fail the enqueue (the state machine retries the step)', async () => {
    sqs.on(SendMessageBatchCommand).rejects(new Error('throttled'));
    await expect(queue.enqueue([message(0)])).rejects.toThrow('throttled');
  });
});
