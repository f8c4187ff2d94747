// The steps of a batch's lifecycle, one module each: validate (validate-step.ts), enqueue (here),
// finalize (finalize.ts), and fail (fail.ts: a step that failed for good ends the batch `failed`,
// so no batch is ever left in a status nothing will move it from). The Step Functions state machine
// (AWS) and the local driver call these same functions. Each is idempotent: it may run again after
// a crash or a retry and the batch ends the same. Every status change goes through transitions.ts.
import type { Logger } from '../log.js';
import type { BlobStore, ChunkMessage, Clock, MetaStore, QuotaStore, WorkQueue } from '../ports.js';
import { dueChunks } from '../schedule/chunk-window.js';
import { NO_QUOTAS, type QuotaConfig, returnBatchQuota, takeBatchQuota, waitsForQuota } from '../schedule/quota.js';
import type { UpstreamRouter } from '../upstream/types.js';
import { blobKeys } from './keys.js';
import type { BatchRecord, ChunkPlanEntry } from './model.js';

export { failBatchStep, type StepFailure } from './fail.js';
export { derivedFileId } from './files.js';
export { finalizeStep } from './finalize.js';
export { validateStep } from './validate-step.js';

export interface StepDeps {
  meta: MetaStore;
  blobs: BlobStore;
  queue: WorkQueue;
  upstreams: UpstreamRouter;
  clock: Clock;
  log: Logger;
  limits: { maxRequestsPerBatch: number; maxLineBytes: number; maxErrors?: number };
  chunking: { maxRequests: number; maxBytes: number };
  /** CHUNK_WINDOW: a batch's chunks on the queue at once (shared/schedule/chunk-window.ts); unset: all. */
  chunkWindow?: number;
  /** The quota counters and their limits (shared/schedule/quota.ts); without them no quota applies. */
  quotas?: QuotaStore;
  quotaConfig?: QuotaConfig;
  /** Told after each status change (the events outbox is then dispatched soon). */
  onTransition?: (batch: BatchRecord) => void;
}

/** The chunk plan of a batch, kept in the BlobStore: plans of huge batches outgrow a DynamoDB item. */
export interface StoredPlan {
  batchId: string;
  inputBlobKey: string;
  chunks: ChunkPlanEntry[];
}

export async function writePlan(blobs: BlobStore, plan: StoredPlan): Promise<void> {
  await blobs.put(blobKeys.plan(plan.batchId), JSON.stringify(plan));
}

export async function readPlan(blobs: BlobStore, batchId: string): Promise<StoredPlan | undefined> {
  if ((await blobs.size(blobKeys.plan(batchId))) === undefined) return undefined;
  const pieces: Buffer[] = [];
  for await (const piece of await blobs.get(blobKeys.plan(batchId))) pieces.push(Buffer.from(piece));
  return JSON.parse(Buffer.concat(pieces).toString('utf8')) as StoredPlan;
}

/** The queue message of one chunk of this batch. */
export function chunkMessage(
  batch: Pick<BatchRecord, 'id' | 'project' | 'priority'>,
  inputBlobKey: string,
  chunk: ChunkPlanEntry,
): ChunkMessage {
  return { batchId: batch.id, inputBlobKey, chunk, project: batch.project, ...(batch.priority ? { priority: batch.priority } : {}) };
}

/**
 * Step "Enqueue": sends a message for every chunk due on the queue (the first CHUNK_WINDOW chunks
 * without a recorded outcome, and those whose predecessor in the window is recorded).
 */
export async function enqueueStep(deps: StepDeps, batchId: string): Promise<number> {
  let [batch, plan] = await Promise.all([deps.meta.getBatch(batchId), readPlan(deps.blobs, batchId)]);
  if (!batch || !plan || !['in_progress', 'cancelling'].includes(batch.status)) return 0;
  if (waitsForQuota(batch)) {
    const admitted = await admit(deps, batch);
    if (!admitted) return 0;
    batch = admitted;
  }
  const due = dueChunks(plan.chunks, new Set(batch.doneChunks), deps.chunkWindow ?? Number.POSITIVE_INFINITY);
  const messages = due.map((chunk) => chunkMessage(batch, plan.inputBlobKey, chunk));
  await deps.queue.enqueue(messages);
  return messages.length;
}

/**
 * Admission: takes the batch's quota, then marks it admitted. Answers the admitted batch, or
 * undefined when it does not fit (it waits) or stopped running meanwhile (what it took goes back).
 */
async function admit(deps: StepDeps, batch: BatchRecord): Promise<BatchRecord | undefined> {
  const quotaDeps = deps.quotas && { ...deps, quotas: deps.quotas, quotaConfig: deps.quotaConfig ?? NO_QUOTAS };
  if (quotaDeps && !(await takeBatchQuota(quotaDeps, batch))) {
    deps.log.log('info', 'batch waits for its project quota', { batchId: batch.id, project: batch.project, requests: batch.total });
    return undefined;
  }
  // Only a batch still running is admitted, and once: a cancel or the window may have come
  // meanwhile, or another batch's end may have admitted it first (that one queues its chunks).
  const admitted = await deps.meta.admitBatch(batch.id, deps.clock.now());
  if (admitted) return admitted;
  if ((await deps.meta.getBatch(batch.id))?.admittedAtMs !== undefined) return undefined;
  // Never admitted, so none of its chunks ran: what it took goes back now (its end gives back nothing twice).
  if (deps.quotas) await returnBatchQuota({ quotas: deps.quotas }, batch);
  return undefined;
}

/** The batches of a project that wait for quota, oldest first, are admitted while they fit. */
export async function admitWaiting(deps: StepDeps, project: string): Promise<number> {
  let admitted = 0;
  for (const batch of await deps.meta.listUnfinishedBatches(project)) {
    if (batch.status !== 'in_progress' || !waitsForQuota(batch)) continue;
    if ((await enqueueStep(deps, batch.id)) > 0) admitted += 1;
  }
  return admitted;
}

/**
 * A final batch gives back what it held of its project's quota (again is harmless), and the
 * project's batches waiting for it may start.
 */
export async function releaseQuota(deps: StepDeps, batch: BatchRecord): Promise<void> {
  if (!deps.quotas || !batch.quotaKeys?.length) return;
  await returnBatchQuota({ quotas: deps.quotas }, batch);
  await admitWaiting(deps, batch.project);
}
