// The Lifecycle on Step Functions. One Standard execution per batch, named for the batch, runs
// Validate → Choice → Enqueue → wait for a task token → Finalize. The token is stored on the batch
// record by the wait step; the last chunk's worker sends task success with it and a cancel sends
// task failure. The state machine catches the cancel and waits once more, with a new token stored
// the same way, while the requests in flight finish: the last chunk's worker (allChunksDone) or
// the drain time ends that wait, and Finalize follows. Until a token is stored there is nothing to
// signal: the wait step looks at the batch right after storing it and sends the signal itself if
// the chunks are already done or (the first wait only) the batch is cancelling.
//
// A start is tried a few times (jittered backoff) before it gives up: the batch then stays
// `validating` without an execution, and the start sweep (shared/batch/start-sweep.ts) starts it
// again a few minutes later, or fails it.
import {
  DescribeExecutionCommand,
  ExecutionAlreadyExists,
  SendTaskFailureCommand,
  SendTaskSuccessCommand,
  type SFNClient,
  StartExecutionCommand,
} from '@aws-sdk/client-sfn';
import pRetry, { AbortError } from 'p-retry';
import type { BatchRecord } from '../../batch/model.js';
import type { Lifecycle, LifecycleState, MetaStore } from '../../ports.js';

export interface SfnLifecycleOptions {
  client: SFNClient;
  /** Needed to start executions only: a function that just signals tasks (wait-for-chunks) has none. */
  stateMachineArn: string | undefined;
  meta: Pick<MetaStore, 'getBatch'>;
  /** The error name the state machine catches as "cancelled". */
  cancelError: string;
  /** Tries of StartExecution, each after a jittered backoff from `startBackoffMs` (default 4, from 200 ms). */
  startAttempts?: number;
  startBackoffMs?: number;
}

/** Signals for a task that has already ended (timed out, or signalled by someone else first). */
const GONE = new Set(['TaskTimedOut', 'TaskDoesNotExist']);
/** StartExecution refusals that trying again cannot change. */
const NOT_RETRIED = new Set([
  'InvalidArn',
  'InvalidName',
  'InvalidExecutionInput',
  'StateMachineDoesNotExist',
  'StateMachineDeleting',
  'ValidationException',
  'AccessDeniedException',
]);

export class SfnLifecycle implements Lifecycle {
  constructor(private readonly options: SfnLifecycleOptions) {}

  async start(batchId: string): Promise<void> {
    const { stateMachineArn } = this.options;
    if (!stateMachineArn) throw new Error('cannot start an execution: STATE_MACHINE_ARN is not set (this function may only signal tasks)');
    const command = new StartExecutionCommand({
      stateMachineArn,
      // The batch id as the name: a retried create or a sweep cannot start a second execution.
      name: batchId,
      input: JSON.stringify({ batchId }),
    });
    await pRetry(
      async () => {
        try {
          await this.options.client.send(command);
        } catch (error) {
          // The input is a function of the name, so an execution of this name is this batch's:
          // started already (running, or ended, which state() tells the sweep).
          if (error instanceof ExecutionAlreadyExists || (error as Error).name === 'ExecutionAlreadyExists') return;
          if (NOT_RETRIED.has((error as Error).name)) throw new AbortError(error as Error);
          throw error;
        }
      },
      {
        retries: (this.options.startAttempts ?? 4) - 1,
        minTimeout: this.options.startBackoffMs ?? 200,
        maxTimeout: 5_000,
        randomize: true,
      },
    );
  }

  async state(batchId: string): Promise<LifecycleState> {
    const { stateMachineArn } = this.options;
    if (!stateMachineArn) throw new Error('cannot describe an execution: STATE_MACHINE_ARN is not set');
    try {
      const { status } = await this.options.client.send(
        new DescribeExecutionCommand({ executionArn: `${stateMachineArn.replace(':stateMachine:', ':execution:')}:${batchId}` }),
      );
      return status === 'RUNNING' ? 'running' : 'ended';
    } catch (error) {
      if ((error as Error).name === 'ExecutionDoesNotExist') return 'none';
      throw error;
    }
  }

  async allChunksDone(batchId: string): Promise<void> {
    const token = (await this.options.meta.getBatch(batchId))?.taskToken;
    if (token) await this.succeed(token, batchId);
  }

  async cancelled(batch: BatchRecord): Promise<void> {
    // No token while validating: validate's compare-and-set then fails and the execution finalizes.
    // The token comes from the cancel's own write: read again later, it could be DrainAfterCancel's,
    // and failing that would cut the drain short.
    if (batch.taskToken) await this.fail(batch.taskToken, batch.id);
  }

  /** Lets the waiting execution go on to Finalize. */
  async succeed(taskToken: string, batchId: string): Promise<void> {
    await ignoreGone(this.options.client.send(new SendTaskSuccessCommand({ taskToken, output: JSON.stringify({ batchId }) })));
  }

  /** Ends the wait with the cancel error, which the state machine routes to DrainAfterCancel. */
  async fail(taskToken: string, batchId: string): Promise<void> {
    await ignoreGone(
      this.options.client.send(
        new SendTaskFailureCommand({ taskToken, error: this.options.cancelError, cause: `batch ${batchId} was cancelled` }),
      ),
    );
  }
}

async function ignoreGone(signal: Promise<unknown>): Promise<void> {
  try {
    await signal;
  } catch (error) {
    if (!GONE.has((error as Error).name)) throw error;
  }
}
