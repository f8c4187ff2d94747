// The exact Step Functions calls SfnLifecycle sends.

import {
  DescribeExecutionCommand,
  ExecutionAlreadyExists,
  ExecutionDoesNotExist,
  InvalidToken,
  SendTaskFailureCommand,
  SendTaskSuccessCommand,
  SFNClient,
  StartExecutionCommand,
  StateMachineDoesNotExist,
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
const lifecycle = new SfnLifecycle({
  client,
  stateMachineArn: ARN,
  meta: { getBatch: async () => stored },
  cancelError: 'BatchCancelled',
  startBackoffMs: 1,
});
const throttled = () => Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException', $metadata: { httpStatusCode: 400 } });

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

  it('tries a start again after a throttle or a fault, a bounded number of times', async () => {
    sfn.on(StartExecutionCommand).rejectsOnce(throttled()).rejectsOnce(new Error('socket hang up')).resolves({ executionArn: 'arn:exec' });
    await lifecycle.start('batch_1');
    expect(sfn.commandCalls(StartExecutionCommand)).toHaveLength(3);
    sfn.reset();
    sfn.on(StartExecutionCommand).rejects(throttled());
    await expect(lifecycle.start('batch_1')).rejects.toThrow('Rate exceeded');
    expect(sfn.commandCalls(StartExecutionCommand)).toHaveLength(4);
  });

  it('does not try again what cannot succeed (no such state machine)', async () => {
    sfn.on(StartExecutionCommand).rejects(new StateMachineDoesNotExist({ message: 'gone', $metadata: {} }));
    await expect(lifecycle.start('batch_1')).rejects.toThrow('gone');
    expect(sfn.commandCalls(StartExecutionCommand)).toHaveLength(1);
  });

  it("tells the batch's execution: running, ended, or none at all", async () => {
    const execution = 'arn:aws:states:us-east-1:123456789012:execution:batches:batch_1';
    sfn.on(DescribeExecutionCommand, { executionArn: execution }).resolvesOnce({ status: 'RUNNING' }).resolvesOnce({ status: 'FAILED' });
    expect(await lifecycle.state('batch_1')).toBe('running');
    expect(await lifecycle.state('batch_1')).toBe('ended');
    sfn.on(DescribeExecutionCommand).rejects(new ExecutionDoesNotExist({ message: 'no such execution', $metadata: {} }));
    expect(await lifecycle.state('batch_1')).toBe('none');
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
