// Behaviour every Lifecycle must have, whatever drives the batch (the local driver, a Step Functions
// execution): a started batch is validated and waits for its chunks; the last chunk's signal
// finalizes it `completed`; a cancel drains and ends it `cancelled`; a second start is the same
// run; and state() tells a batch nothing drives (never started: what the start sweep looks for)
// from one that is running. An adapter's test file calls lifecycleContract() with a factory that
// builds a fresh world: the lifecycle, and the steps and workers it drives.
import { describe, expect, it } from 'vitest';
import type { BatchRecord, BatchStatus } from '../../shared/batch/model.js';
import type { Lifecycle } from '../../shared/ports.js';

export interface LifecycleWorld {
  lifecycle: Lifecycle;
  /** A new batch, recorded `validating` with a valid input of a few requests, not started. */
  createBatch(): Promise<string>;
  status(batchId: string): Promise<BatchStatus | undefined>;
  /** True once the batch waits for its chunks (it is in_progress and its wait can be signalled). */
  waiting(batchId: string): Promise<boolean>;
  /** What the workers do: every chunk of the batch runs and is recorded; the last one signals allChunksDone. */
  runAllChunks(batchId: string): Promise<void>;
  /** The cancel API's compare-and-set to `cancelling`; answers the batch as it left it (the caller signals). */
  cancel(batchId: string): Promise<BatchRecord>;
  close(): Promise<void>;
}

async function until(condition: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`${what}: not after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export function lifecycleContract(name: string, makeWorld: () => Promise<LifecycleWorld>, timeoutMs = 60_000): void {
  describe(`Lifecycle contract: ${name}`, () => {
    async function inWorld(run: (world: LifecycleWorld) => Promise<void>): Promise<void> {
      const world = await makeWorld();
      try {
        await run(world);
      } finally {
        await world.close();
      }
    }

    it(
      'a batch never started has nothing driving it; once started it is running',
      () =>
        inWorld(async ({ lifecycle, createBatch, waiting }) => {
          const id = await createBatch();
          expect(await lifecycle.state(id)).toBe('none');
          await lifecycle.start(id);
          await until(() => waiting(id), 'waiting for its chunks');
          expect(await lifecycle.state(id)).toBe('running');
        }),
      timeoutMs,
    );

    it(
      'validates, waits for the chunks, and completes on the last chunk; a second start is the same run',
      () =>
        inWorld(async ({ lifecycle, createBatch, status, waiting, runAllChunks }) => {
          const id = await createBatch();
          await lifecycle.start(id);
          await lifecycle.start(id); // a retried create, or the start sweep
          await until(() => waiting(id), 'waiting for its chunks');
          expect(await status(id)).toBe('in_progress');
          await runAllChunks(id);
          await until(async () => (await status(id)) === 'completed', 'completed');
          await until(async () => (await lifecycle.state(id)) !== 'running', 'no longer running');
          // Starting a finished batch again changes nothing.
          await lifecycle.start(id);
          expect(await status(id)).toBe('completed');
        }),
      timeoutMs,
    );

    it(
      'a cancel while waiting drains the chunks in flight, then ends the batch cancelled',
      () =>
        inWorld(async ({ lifecycle, createBatch, status, waiting, runAllChunks, cancel }) => {
          const id = await createBatch();
          await lifecycle.start(id);
          await until(() => waiting(id), 'waiting for its chunks');
          await lifecycle.cancelled(await cancel(id));
          expect(await status(id)).toBe('cancelling');
          await runAllChunks(id); // the requests in flight finish
          await until(async () => (await status(id)) === 'cancelled', 'cancelled');
        }),
      timeoutMs,
    );
  });
}
