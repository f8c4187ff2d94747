// An honest estimate of when a batch ends, and a short reason while it waits, from what the
// project's own batches show: the rate at which its running batches finish lines (measured since
// each was admitted), how many of them share that rate with it (the fair turns share a project's
// throughput between its batches), and what is ahead of it in its project's quota.
//
// What it does not know: the rate another project's batches take from the same route (they share
// it fairly, so a project's measured rate already reflects them while both run, but not a burst
// that starts later), and upstream rate limiting as the workers see it (only its effect on the
// measured rate). With no measured rate yet (nothing of the project has finished a line), there is
// no estimate: no number is better than an invented one.
import type { BatchRecord } from '../batch/model.js';
import type { Clock, MetaStore } from '../ports.js';
import { waitsForQuota } from './quota.js';

export interface BatchEstimate {
  /** When the batch is expected to end (epoch ms). */
  completionAtMs?: number;
  /** Why it is not running yet, in a few words. */
  reason?: string;
}

const RUNNING = ['in_progress', 'cancelling'];
const done = (batch: BatchRecord) => batch.completed + batch.failed;
const remaining = (batch: BatchRecord) => Math.max(0, batch.total - done(batch));

/** A running, admitted batch's measured rate in lines per ms (undefined before its first line). */
function rateOf(batch: BatchRecord, nowMs: number): number | undefined {
  if (!RUNNING.includes(batch.status) || batch.admittedAtMs === undefined || done(batch) === 0) return undefined;
  return done(batch) / Math.max(1, nowMs - batch.admittedAtMs);
}

/** What the project's running batches finish together, per ms, and how many run. */
export function projectThroughput(open: readonly BatchRecord[], nowMs: number): { rate: number; running: number } {
  let rate = 0;
  let running = 0;
  for (const batch of open) {
    if (!RUNNING.includes(batch.status) || batch.admittedAtMs === undefined || remaining(batch) === 0) continue;
    running += 1;
    rate += rateOf(batch, nowMs) ?? 0;
  }
  return { rate, running };
}

/**
 * The estimate of `batch` given its project's unfinished batches (`open`, oldest first; it may be
 * among them).
 */
export function estimateBatch(batch: BatchRecord, open: readonly BatchRecord[], nowMs: number): BatchEstimate {
  if (!RUNNING.includes(batch.status) || batch.status === 'cancelling') return {};
  const others = open.filter((other) => other.id !== batch.id);
  const { rate: projectRate, running } = projectThroughput(others, nowMs);
  if (waitsForQuota(batch)) {
    const ahead = others.filter((other) => other.createdAtMs <= batch.createdAtMs && RUNNING.includes(other.status));
    const aheadLines = ahead.reduce((sum, other) => sum + remaining(other), 0);
    // Once the quota frees it shares the project's rate with what still runs.
    const completionAtMs = projectRate > 0 ? nowMs + (aheadLines + batch.total) / projectRate : undefined;
    return { ...(completionAtMs !== undefined ? { completionAtMs: Math.round(completionAtMs) } : {}), reason: 'waiting for project quota' };
  }
  const own = rateOf(batch, nowMs);
  if (own !== undefined) return { completionAtMs: Math.round(nowMs + remaining(batch) / own) };
  // Admitted, nothing finished yet: its share of the project's rate.
  const earlier = others.filter(
    (other) => other.createdAtMs <= batch.createdAtMs && RUNNING.includes(other.status) && remaining(other) > 0,
  );
  const reason = earlier.length > 0 ? `queued behind ${earlier.length} batch${earlier.length === 1 ? '' : 'es'}` : undefined;
  const completionAtMs = projectRate > 0 ? nowMs + (remaining(batch) * (running + 1)) / projectRate : undefined;
  return {
    ...(completionAtMs !== undefined ? { completionAtMs: Math.round(completionAtMs) } : {}),
    ...(reason ? { reason } : {}),
  };
}

/**
 * The estimate for a batch of `requests` lines created now, beside the project's open batches: its
 * fair share of the project's measured rate. Undefined when nothing is measured yet.
 */
export function estimateNewBatch(requests: number, open: readonly BatchRecord[], nowMs: number): number | undefined {
  const { rate, running } = projectThroughput(open, nowMs);
  if (rate <= 0) return undefined;
  return Math.round(nowMs + (requests * (running + 1)) / rate);
}

/** The batches with their estimates: one read of the project's open batches when any of them runs. */
export async function withEstimates<B extends BatchRecord>(
  deps: { meta: Pick<MetaStore, 'listUnfinishedBatches'>; clock: Pick<Clock, 'now'> },
  project: string,
  batches: B[],
): Promise<(B & { estimate?: BatchEstimate })[]> {
  if (!batches.some((batch) => batch.status === 'in_progress')) return batches;
  // A batch that has finished lines is estimated from its own rate: the project's batches are read
  // only for one that has not (one Query, not one per poll of every running batch).
  const measuredAlone = (batch: B) =>
    batch.status !== 'in_progress' || (batch.admittedAtMs !== undefined && batch.completed + batch.failed > 0);
  const open = batches.every(measuredAlone) ? [] : await deps.meta.listUnfinishedBatches(project);
  const now = deps.clock.now();
  return batches.map((batch) => {
    const estimate = estimateBatch(batch, open, now);
    return estimate.completionAtMs !== undefined || estimate.reason ? { ...batch, estimate } : batch;
  });
}
