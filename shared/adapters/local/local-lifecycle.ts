// The embedded Lifecycle: drives each batch through the same steps as the Step Functions state
// machine (validate → enqueue → wait for all chunks, a cancel or the window → finalize), one
// step at a time per batch. Its state is the batch record itself, so after a restart `resume()`
// picks every unfinished batch up where it was and re-enqueues the chunks that have no outcome.
// A step that keeps failing is tried `maxStepAttempts` times, as the state machine's Retry does,
// and then the batch ends `failed` (failBatchStep), as the state machine's Catch does.

import { chunksWait, waitDeadlineMs } from '../../batch/chunks-wait.js';
import { type BatchRecord, TERMINAL_STATUSES } from '../../batch/model.js';
import { enqueueStep, failBatchStep, finalizeStep, type StepDeps, validateStep } from '../../batch/steps.js';
import { errorMessage } from '../../log.js';
import type { Lifecycle, LifecycleState } from '../../ports.js';

export interface LocalLifecycleOptions {
  /**
   * How long after the window closes (or after a cancel) the batch is finalized even if some
   * chunks have not reported: requests in flight get this long to finish.
   */
  drainTimeoutMs: number;
  /** Delay before a step that threw is tried again (it grows with each attempt). */
  retryDelayMs?: number;
  /** Tries of a step before the batch ends failed (default 6, as the state machine's Retry). */
  maxStepAttempts?: number;
}

type Advance = { enqueue: boolean; force?: boolean } | { fail: string };

export class LocalLifecycle implements Lifecycle {
  private readonly chains = new Map<string, Promise<void>>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private stopped = false;

  constructor(
    private readonly deps: StepDeps,
    private readonly options: LocalLifecycleOptions,
  ) {}

  async start(batchId: string): Promise<void> {
    this.schedule(batchId, { enqueue: false });
  }

  async allChunksDone(batchId: string): Promise<void> {
    this.schedule(batchId, { enqueue: false });
  }

  async cancelled(batch: BatchRecord): Promise<void> {
    this.schedule(batch.id, { enqueue: false });
  }

  /**
   * `running` while a step of the batch runs or waits to run (a retry, the drain timer); otherwise
   * `none`: this process does not drive it (it never started it, e.g. after a crash between the
   * batch's creation and its start, or it is done with it). The driver keeps no history: never `ended`.
   */
  async state(batchId: string): Promise<LifecycleState> {
    return this.chains.has(batchId) || this.timers.has(batchId) ? 'running' : 'none';
  }

  /** Picks up every batch that was running when the service last stopped. */
  async resume(): Promise<number> {
    const batches = await this.deps.meta.listUnfinishedBatches();
    for (const batch of batches) this.schedule(batch.id, { enqueue: true });
    return batches.length;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    await Promise.allSettled([...this.chains.values()]);
  }

  /**
   * Runs `advance` after whatever is already running for this batch: one step at a time per batch.
   * A step that threw is tried again later; after maxStepAttempts tries the batch is failed instead
   * (and failing it is tried again until it holds: a batch never stays where nothing moves it).
   */
  private schedule(batchId: string, options: Advance, attempt = 1): void {
    if (this.stopped) return;
    const previous = this.chains.get(batchId) ?? Promise.resolve();
    const next = previous
      .then(() => ('fail' in options ? this.fail(batchId, options.fail) : this.advance(batchId, options)))
      .catch((error) => {
        this.deps.log.log('error', 'lifecycle step failed', { batchId, attempt, error: errorMessage(error) });
        const giveUp = !('fail' in options) && attempt >= (this.options.maxStepAttempts ?? 6);
        const again: Advance = giveUp ? { fail: error instanceof Error ? error.name : 'Error' } : options;
        this.later(batchId, (this.options.retryDelayMs ?? 1_000) * Math.min(giveUp ? 1 : attempt, 30), () =>
          this.schedule(batchId, again, giveUp ? 1 : attempt + 1),
        );
      })
      .finally(() => {
        if (this.chains.get(batchId) === next) this.chains.delete(batchId);
      });
    this.chains.set(batchId, next);
  }

  private async advance(batchId: string, options: { enqueue: boolean; force?: boolean }): Promise<void> {
    let enqueue = options.enqueue;
    for (;;) {
      if (this.stopped) return;
      const batch = await this.deps.meta.getBatch(batchId);
      if (!batch || TERMINAL_STATUSES.includes(batch.status)) {
        this.clearTimer(batchId);
        return;
      }
      switch (batch.status) {
        case 'validating':
          if ((await validateStep(this.deps, batchId)) === 'in_progress') enqueue = true;
          continue;
        case 'finalizing':
          await finalizeStep(this.deps, batchId);
          continue;
        case 'in_progress':
        case 'cancelling':
          if (options.force || chunksWait(batch) === 'finalize') {
            await finalizeStep(this.deps, batchId);
            continue;
          }
          if (enqueue) {
            await enqueueStep(this.deps, batchId);
            enqueue = false;
          }
          this.armDrainTimer(batch);
          return;
      }
    }
  }

  private async fail(batchId: string, error: string): Promise<void> {
    await failBatchStep(this.deps, batchId, { error });
    this.clearTimer(batchId);
  }

  /** The equivalent of the state machine's task-token timeout: finalize even if chunks are missing. */
  private armDrainTimer(batch: BatchRecord): void {
    const at = waitDeadlineMs(batch, this.options.drainTimeoutMs);
    this.later(batch.id, at - this.deps.clock.now(), () => this.schedule(batch.id, { enqueue: false, force: true }));
  }

  private later(batchId: string, delayMs: number, run: () => void): void {
    this.clearTimer(batchId);
    // setTimeout holds at most about 24.8 days; a longer wait re-arms itself.
    const maxDelay = 2 ** 31 - 1;
    const timer = setTimeout(
      () => {
        this.timers.delete(batchId);
        if (delayMs > maxDelay) this.later(batchId, delayMs - maxDelay, run);
        else run();
      },
      Math.max(0, Math.min(delayMs, maxDelay)),
    );
    this.timers.set(batchId, timer);
  }

  private clearTimer(batchId: string): void {
    const timer = this.timers.get(batchId);
    if (timer) clearTimeout(timer);
    this.timers.delete(batchId);
  }
}
