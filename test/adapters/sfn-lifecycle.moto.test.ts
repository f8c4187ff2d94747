// SfnLifecycle under the Lifecycle contract, against moto's Step Functions executing the
// synthesized state machine (StartExecution, DescribeExecution, SendTaskSuccess and SendTaskFailure
// on the wire). Its Lambda tasks are stand-ins (test/support/moto-state-machine.ts) that do to an
// in-memory batch what the steps do to the stored one; the wait step's stand-in stores its token
// and answers it itself when the chunks are done or a cancel came first, as wait-for-chunks does.
import { afterAll, beforeAll } from 'vitest';
import { CANCEL_ERROR } from '../../functions/contract.js';
import { SfnLifecycle } from '../../shared/adapters/aws/sfn-lifecycle.js';
import type { BatchRecord } from '../../shared/batch/model.js';
import { type Synthesized, synthesize } from '../infra/support.js';
import { MOTO_SERVER, type MotoServer, motoSkipNotice, startMoto } from '../support/moto.js';
import { MotoStateMachine } from '../support/moto-state-machine.js';
import { lifecycleContract } from './lifecycle-contract.js';
import { batchRecord } from './meta-store-contract.js';

/**
 * One region per world: moto 5.2 cannot start an execution in a region that already has one (see
 * test/infra/state-machine.moto.test.ts).
 */
const REGIONS = ['us-east-1', 'us-east-2', 'us-west-1', 'us-west-2', 'eu-west-1', 'eu-west-2', 'eu-central-1', 'ap-northeast-1'];

if (!MOTO_SERVER) {
  motoSkipNotice('the Lifecycle contract on Step Functions');
} else {
  let synthesized: Synthesized;
  let moto: MotoServer;
  const machines: MotoStateMachine[] = [];
  let worlds = 0;
  beforeAll(async () => {
    synthesized = synthesize(undefined, { nag: false });
    moto = await startMoto();
  }, 120_000);
  afterAll(async () => {
    await Promise.all(machines.map((machine) => machine.close()));
    await moto?.close();
  });

  lifecycleContract('SfnLifecycle on moto Step Functions', async () => {
    const region = REGIONS[worlds++ % REGIONS.length]!;
    const machine = await MotoStateMachine.create({ sfn: moto.sfn(region), sqs: moto.sqs(region) }, synthesized, { fastRetries: true });
    machines.push(machine);
    const batches = new Map<string, BatchRecord>();
    const chunksDone = new Set<string>();
    const update = (id: string, changes: Partial<BatchRecord>) => batches.set(id, { ...batches.get(id)!, ...changes });
    const lifecycle = new SfnLifecycle({
      client: moto.sfn(region),
      stateMachineArn: machine.stateMachineArn,
      meta: { getBatch: async (id) => batches.get(id) },
      cancelError: CANCEL_ERROR,
    });
    machine
      .on('ValidateFn', ({ input }) => {
        const id = String(input.batchId);
        if (batches.get(id)!.status === 'validating') update(id, { status: 'in_progress' });
        return { batchId: id, status: batches.get(id)!.status };
      })
      .on('EnqueueFn', ({ input }) => ({ batchId: input.batchId, waitSeconds: 120, drainSeconds: 60 }))
      .on('WaitForChunksFn', async ({ input }) => {
        const id = String(input.batchId);
        const token = String(input.taskToken);
        update(id, { taskToken: token });
        if (chunksDone.has(id)) await lifecycle.succeed(token, id);
        else if (!input.draining && batches.get(id)!.status === 'cancelling') await lifecycle.fail(token, id);
      })
      .on('FinalizeFn', ({ input }) => {
        const id = String(input.batchId);
        update(id, { status: batches.get(id)!.status === 'cancelling' ? 'cancelled' : 'completed' });
        return { batchId: id, status: batches.get(id)!.status };
      });
    return {
      lifecycle,
      async createBatch() {
        const batch = batchRecord({ id: `batch_lc${Date.now()}${worlds}${batches.size}`, status: 'validating', taskToken: null });
        batches.set(batch.id, batch);
        return batch.id;
      },
      status: async (id) => batches.get(id)?.status,
      waiting: async (id) => batches.get(id)?.status === 'in_progress' && Boolean(batches.get(id)?.taskToken),
      async runAllChunks(id) {
        chunksDone.add(id);
        await lifecycle.allChunksDone(id);
      },
      async cancel(id) {
        update(id, { status: 'cancelling' });
        return batches.get(id)!;
      },
      close: async () => undefined,
    };
  });
}
