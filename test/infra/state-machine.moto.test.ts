// The synthesized state machine, executed by moto's Step Functions, driven through the real
// SfnLifecycle adapter (StartExecution, SendTaskSuccess, SendTaskFailure on the wire) with the
// Lambda tasks played by stand-ins (test/support/moto-state-machine.ts): the happy path, a file
// that fails validation, a cancel that drains, a window that passes, a step that fails for good.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CANCEL_ERROR } from '../../functions/contract.js';
import { SfnLifecycle } from '../../shared/adapters/aws/sfn-lifecycle.js';
import type { BatchRecord } from '../../shared/batch/model.js';
import { batchRecord } from '../adapters/meta-store-contract.js';
import { MOTO_SERVER, type MotoServer, motoSkipNotice, startMoto } from '../support/moto.js';
import { MotoStateMachine, StepFailure } from '../support/moto-state-machine.js';
import { type Synthesized, synthesize } from './support.js';

const HAPPY_PATH = ['Validate', 'AfterValidate', 'Enqueue', 'WaitForChunks', 'Finalize'];
/** One per scenario (see scenario()). */
const REGIONS = ['us-east-1', 'us-east-2', 'us-west-1', 'us-west-2', 'eu-west-1', 'eu-west-2', 'eu-central-1', 'ap-northeast-1'];

if (!MOTO_SERVER) {
  motoSkipNotice('the synthesized state machine in Step Functions');
} else {
  describe('the synthesized state machine in moto Step Functions, through SfnLifecycle', () => {
    let synthesized: Synthesized;
    let moto: MotoServer;
    const machines: MotoStateMachine[] = [];
    let counter = 0;

    beforeAll(async () => {
      synthesized = synthesize(undefined, { nag: false });
      moto = await startMoto();
    }, 120_000);
    afterAll(async () => {
      await Promise.all(machines.map((machine) => machine.close()));
      await moto?.close();
    });

    /**
     * A state machine for one batch, the SfnLifecycle adapter on it, and stand-ins that answer as
     * the steps usually do (a test changes one with machine.on). Each in a region of its own: moto
     * 5.2 cannot start an execution in a region that already has one (it deep-copies the state
     * machine with its backend, other executions included, and fails on their threads' locks).
     */
    async function scenario() {
      const region = REGIONS[counter % REGIONS.length]!;
      const machine = await MotoStateMachine.create({ sfn: moto.sfn(region), sqs: moto.sqs(region) }, synthesized, { fastRetries: true });
      machines.push(machine);
      const batch = batchRecord({ id: `batch_sm${Date.now()}${counter++}`, status: 'validating' });
      /** The batch as the wait-for-chunks stand-in leaves it: the real one stores the token on the batch. */
      let stored: BatchRecord = batch;
      const lifecycle = new SfnLifecycle({
        client: moto.sfn(region),
        stateMachineArn: machine.stateMachineArn,
        meta: { getBatch: async (id) => (id === batch.id ? stored : undefined) },
        cancelError: CANCEL_ERROR,
      });
      machine
        .on('ValidateFn', ({ input }) => ({ batchId: input.batchId, status: 'in_progress' }))
        .on('EnqueueFn', ({ input }) => ({ batchId: input.batchId, waitSeconds: 120, drainSeconds: 60 }))
        .on('WaitForChunksFn', ({ input }) => {
          stored = { ...stored, status: input.draining ? 'cancelling' : 'in_progress', taskToken: String(input.taskToken) };
        })
        .on('FinalizeFn', ({ input }) => ({ batchId: input.batchId, status: stored.status }));
      return { machine, lifecycle, batch, stored: () => stored };
    }

    it('happy path: validate, enqueue, wait until the last chunk signals, finalize; a second start is the same execution', async () => {
      const { machine, lifecycle, batch, stored } = await scenario();
      await lifecycle.start(batch.id);
      await lifecycle.start(batch.id); // a retried create: StartExecution with the same name and input
      await machine.invoked('WaitForChunksFn');
      // The last worker's chunk: SfnLifecycle reads the stored token and sends task success.
      await lifecycle.allChunksDone(batch.id);
      const run = await machine.finished(batch.id);
      expect(run.status).toBe('SUCCEEDED');
      expect(run.path).toEqual(HAPPY_PATH);
      expect(machine.invocations.map((i) => i.fn)).toEqual(['ValidateFn', 'EnqueueFn', 'WaitForChunksFn', 'FinalizeFn']);
      expect(machine.invocations[0]!.input).toEqual({ batchId: batch.id });
      expect(machine.invocations[2]!.input).toEqual({ batchId: batch.id, taskToken: stored().taskToken });
    });

    it('invalid input: validation records failed and the execution ends without finalizing', async () => {
      const { machine, lifecycle, batch } = await scenario();
      machine.on('ValidateFn', ({ input }) => ({ batchId: input.batchId, status: 'failed' }));
      await lifecycle.start(batch.id);
      const run = await machine.finished(batch.id);
      expect(run.status).toBe('SUCCEEDED');
      expect(run.path).toEqual(['Validate', 'AfterValidate', 'ValidationFailed']);
      expect(machine.invocations.map((i) => i.fn)).toEqual(['ValidateFn']);
    });

    it('cancel: the wait fails with the cancel error at once (no retry), the drain waits for the last chunk, then finalize', async () => {
      const { machine, lifecycle, batch, stored } = await scenario();
      await lifecycle.start(batch.id);
      await machine.invoked('WaitForChunksFn');
      const waiting = stored();
      // The cancel API's compare-and-set left the batch cancelling, with the token it saw.
      await lifecycle.cancelled({ ...waiting, status: 'cancelling' });
      const [, drain] = await machine.invoked('WaitForChunksFn', 2);
      expect(drain).toMatchObject({ state: 'DrainAfterCancel', input: { batchId: batch.id, draining: true } });
      expect(stored().taskToken).not.toBe(waiting.taskToken);
      await lifecycle.allChunksDone(batch.id); // the last chunk in flight is recorded
      const run = await machine.finished(batch.id);
      expect(run.status).toBe('SUCCEEDED');
      expect(run.path).toEqual(['Validate', 'AfterValidate', 'Enqueue', 'WaitForChunks', 'DrainAfterCancel', 'Finalize']);
      expect(machine.invocations.filter((i) => i.fn === 'WaitForChunksFn').map((i) => i.state)).toEqual([
        'WaitForChunks',
        'DrainAfterCancel',
      ]);
      expect(run.events.some((e) => e.type === 'TaskFailed' && e.taskFailedEventDetails?.error === CANCEL_ERROR)).toBe(true);
    });

    it('window expiry: the wait times out (States.Timeout) and finalize runs; a late signal finds the task gone', async () => {
      const { machine, lifecycle, batch } = await scenario();
      machine.on('EnqueueFn', ({ input }) => ({ batchId: input.batchId, waitSeconds: 2, drainSeconds: 60 }));
      await lifecycle.start(batch.id);
      const run = await machine.finished(batch.id);
      expect(run.status).toBe('SUCCEEDED');
      expect(run.path).toEqual(HAPPY_PATH);
      expect(run.events.some((e) => e.type === 'TaskTimedOut')).toBe(true);
      // A worker finishing after the window: AWS answers TaskTimedOut (or TaskDoesNotExist), which
      // SfnLifecycle ignores (sfn-lifecycle.mock.test.ts). moto answers InvalidToken instead, which
      // SfnLifecycle rightly does not ignore (a malformed token is a bug): the stricter reading stays.
      await expect(lifecycle.allChunksDone(batch.id)).rejects.toMatchObject({ name: 'InvalidToken' });
    });

    it('a step failing for good: Enqueue is retried, then caught, and FailBatch ends the batch failed', async () => {
      const { machine, lifecycle, batch } = await scenario();
      machine.on('EnqueueFn', () => {
        throw new StepFailure('Error', 'SQS refused the chunk messages');
      });
      await lifecycle.start(batch.id);
      const run = await machine.finished(batch.id);
      // The execution fails (the failed-executions alarm sees it) after FailBatch ended the batch.
      expect(run.status).toBe('FAILED');
      expect(run.path).toEqual(['Validate', 'AfterValidate', 'Enqueue', 'FailBatch', 'BatchFailed']);
      const failBatch = machine.invocations.filter((i) => i.fn === 'FinalizeFn');
      expect(failBatch).toHaveLength(1);
      expect(failBatch[0]!.input).toMatchObject({ batchId: batch.id, failure: { Error: 'Error' } });
      // States.TaskFailed matches a function's error: the first attempt and 6 retries.
      expect(machine.invocations.filter((i) => i.fn === 'EnqueueFn')).toHaveLength(7);
    });
  });
}
