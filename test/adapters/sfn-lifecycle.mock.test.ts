// The exact Step Functions calls SfnLifecycle sends.

import {
  ExecutionAlreadyExists,
  InvalidToken,
  SendTaskFailureCommand,
  SendTaskSuccessCommand,
  SFNClient,
  StartExecutionCommand,
  TaskDoesNotExist,
  TaskTimedOut,
} from '@aws-sdk/client-sfn';
import { mockClient } from 'aws-sdk-client-mock';
import { beforeEach, describe, expect, it } from 'vitest';
import { SfnLifecycle } from '../../shared/adapters/aws/sfn-lifecycle.js';
import type { BatchRecord } from '../../shared/batch/model.js';
import { batchRecord } from './meta-store-contract.js';

const ARN = 'arn:aws:states:us-east-1:123456789012:stateMachine:batches';
const sfn = mockClient(SFNClient);
const client = new SFNClient({ region: 'us-east-1', credentials: { accessKeyId: 'x', secretAccessKey: 'x' } });
let stored: BatchRecord | undefined;
const lifecycle = new SfnLifecycle({ client, stateMachineArn: ARN, meta: { getBatch: async () => stored }, cancelError: 'BatchCancelled' });

beforeEach(() => {
  sfn.reset();
  stored = batchRecord({ id: 'batch_1', status: 'in_progress', taskToken: 'token-1' });
});

describe('SfnLifecycle', () => {
  it('starts one execution named for the batch', async () => {
    sfn.on(StartExecutionCommand).resolves({ executionArn: 'arn:exec' });
    await lifecycle.start('batch_1');
    expect(sfn.commandCalls(StartExecutionCommand)[0]!.args[0].input).toEqual({
      stateMachineArn: ARN,
      name: 'batch_1',
      input: '{"batchId":"batch_1"}',
    });
  });

  it('treats an execution that already exists as started', async () => {
    sfn.on(StartExecutionCommand).rejects(new ExecutionAlreadyExists({ message: 'exists', $metadata: {} }));
    await expect(lifecycle.start('batch_1')).resolves.toBeUndefined();
  });

  it('sends task success with the stored token when all chunks are done', async () => {
    sfn.on(SendTaskSuccessCommand).resolves({});
    await lifecycle.allChunksDone('batch_1');
    expect(sfn.commandCalls(SendTaskSuccessCommand)[0]!.args[0].input).toEqual({ taskToken: 'token-1', output: '{"batchId":"batch_1"}' });
  });

  it('sends the cancel error as task failure, with the token the cancel itself read', async () => {
    sfn.on(SendTaskFailureCommand).resolves({});
    const cancelling = batchRecord({ id: 'batch_1', status: 'cancelling', taskToken: 'token-1' });
    stored = batchRecord({ id: 'batch_1', status: 'cancelling', taskToken: 'drain-token' });
    await lifecycle.cancelled(cancelling);
    expect(sfn.commandCalls(SendTaskFailureCommand)[0]!.args[0].input).toEqual({
      taskToken: 'token-1',
      error: 'BatchCancelled',
      cause: 'batch batch_1 was cancelled',
    });
  });

  it('sends nothing while no token is stored (the wait step checks after storing it)', async () => {
    stored = batchRecord({ id: 'batch_1', status: 'validating', taskToken: null });
    await lifecycle.allChunksDone('batch_1');
    await lifecycle.cancelled(stored);
    stored = undefined;
    await lifecycle.allChunksDone('batch_1');
    expect(sfn.calls()).toHaveLength(0);
  });

  it('shrugs off a task that has already ended, but not a bad token', async () => {
    sfn.on(SendTaskSuccessCommand).rejects(new TaskTimedOut({ message: 'timed out', $metadata: {} }));
    sfn.on(SendTaskFailureCommand).rejects(new TaskDoesNotExist({ message: 'gone', $metadata: {} }));
    await expect(lifecycle.allChunksDone('batch_1')).resolves.toBeUndefined();
    await expect(lifecycle.cancelled(stored!)).resolves.toBeUndefined();
    sfn.on(SendTaskSuccessCommand).rejects(new InvalidToken({ message: 'bad token', $metadata: {} }));
    await expect(lifecycle.allChunksDone('batch_1')).rejects.toThrow('bad token');
  });

  it('signals with a task token alone, without the state machine ARN (wait-for-chunks has none), but cannot start without it', async () => {
    const signalOnly = new SfnLifecycle({
      client,
      stateMachineArn: undefined,
      meta: { getBatch: async () => stored },
      cancelError: 'BatchCancelled',
    });
    sfn.on(SendTaskSuccessCommand).resolves({});
    await signalOnly.succeed('token-1', 'batch_1');
    expect(sfn.commandCalls(SendTaskSuccessCommand)).toHaveLength(1);
    await expect(signalOnly.start('batch_1')).rejects.toThrow('STATE_MACHINE_ARN is not set');
    expect(sfn.commandCalls(StartExecutionCommand)).toHaveLength(0);
  });
});
