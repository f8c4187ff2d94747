// Quotas: what a project may have enqueued at once, in requests and in estimated tokens, across all
// its batches (PROJECT_MAX_ENQUEUED_REQUESTS / _TOKENS, PROJECT_QUOTAS per project) and on each
// route (a route's maxEnqueuedRequests / maxEnqueuedTokens, for each project on it).
//
// A batch larger than a quota by itself is refused at create (the route's by the model of the
// file's first line; validation checks again by every line). Any other batch is accepted: after
// validation it takes its amount from each counter that applies (admission, one conditional write)
// and only then do its chunks go on the queue; when it does not fit it waits, `in_progress` with no
// chunk queued, its window running, until an earlier batch of the project ends and gives its amount
// back. The amount is held until the batch is final, whatever the end (completed, failed,
// cancelled, expired), and given back once.
//
// Where the counts live: in the MetaStore's table (QuotaStore), taken and given back by conditional
// writes that name the batch, so a step that runs again never counts twice. The counters a batch
// takes are written on the batch first (quotaKeys), so its end gives back exactly those even after
// a crash between the two; and a take that finds no room first gives back what batches already
// final still hold (a crash after the end, before the give-back), so nothing leaks for good.
import type { BatchRecord } from '../batch/model.js';
import type { Logger } from '../log.js';
import type { Clock, MetaStore, QuotaAmount, QuotaLimits, QuotaStore } from '../ports.js';

/** Estimated tokens of an input: about four bytes a token (the rate limiter's rule), max_tokens not counted. */
export const estimatedTokensOf = (bytes: number): number => Math.ceil(bytes / 4);

export interface QuotaConfig {
  /** PROJECT_MAX_ENQUEUED_REQUESTS / _TOKENS. */
  defaults: QuotaLimits;
  /** PROJECT_QUOTAS: a project's own limits, over the defaults. */
  projects: Readonly<Record<string, QuotaLimits>>;
  /** By route name (pattern, or `default`): each project's limits on that route. */
  routes: Readonly<Record<string, QuotaLimits>>;
}

export const NO_QUOTAS: QuotaConfig = { defaults: {}, projects: {}, routes: {} };

/** One counter a batch takes from: its key, its limits, and how to name them to a user. */
export interface QuotaCounter {
  key: string;
  limits: QuotaLimits;
  /** The settings that set the limits, for messages. */
  names: { requests: string; tokens: string };
}

const hasLimit = (limits: QuotaLimits) => limits.requests !== undefined || limits.tokens !== undefined;

/** The counters that apply to a batch of `project` on `route` (none when no limit is set). */
export function quotaCounters(config: QuotaConfig, project: string, route: string | undefined): QuotaCounter[] {
  const own = config.projects[project];
  const projectLimits = { ...config.defaults, ...own };
  const counters: QuotaCounter[] = [];
  if (hasLimit(projectLimits)) {
    counters.push({
      key: `project:${project}`,
      limits: projectLimits,
      names: {
        requests: own?.requests !== undefined ? `PROJECT_QUOTAS (${project}).maxEnqueuedRequests` : 'PROJECT_MAX_ENQUEUED_REQUESTS',
        tokens: own?.tokens !== undefined ? `PROJECT_QUOTAS (${project}).maxEnqueuedTokens` : 'PROJECT_MAX_ENQUEUED_TOKENS',
      },
    });
  }
  const routeLimits = route === undefined ? undefined : config.routes[route];
  if (route !== undefined && routeLimits && hasLimit(routeLimits)) {
    counters.push({
      key: `route:${route}:${project}`,
      limits: routeLimits,
      names: { requests: `the route ${route}'s maxEnqueuedRequests`, tokens: `the route ${route}'s maxEnqueuedTokens` },
    });
  }
  return counters;
}

/** Why an amount can never fit one of these counters, in a sentence; undefined when it can. */
export function tooLargeForQuota(counters: readonly QuotaCounter[], amount: QuotaAmount): string | undefined {
  for (const { limits, names } of counters) {
    if (limits.requests !== undefined && amount.requests > limits.requests) {
      return `The batch has ${amount.requests} requests; this project may have at most ${limits.requests} enqueued at once (${names.requests}). Split the file into smaller batches.`;
    }
    if (limits.tokens !== undefined && amount.tokens > limits.tokens) {
      return `The batch has about ${amount.tokens} tokens (estimated: a token per four bytes of the input file); this project may have at most ${limits.tokens} enqueued at once (${names.tokens}). Split the file into smaller batches.`;
    }
  }
  return undefined;
}

export const amountOf = (batch: Pick<BatchRecord, 'total' | 'estimatedTokens'>): QuotaAmount => ({
  requests: batch.total,
  tokens: batch.estimatedTokens ?? 0,
});

export interface QuotaDeps {
  meta: MetaStore;
  quotas: QuotaStore;
  quotaConfig: QuotaConfig;
  clock: Pick<Clock, 'now'>;
  log: Logger;
}

const RUNNING = ['in_progress', 'cancelling'];
const FINAL = ['completed', 'failed', 'expired', 'cancelled'];

/**
 * Takes the batch's amount from every counter it needs; true when it holds them all (now or
 * already), false when one has no room (it then holds none of them). A batch already admitted
 * answers true at once.
 */
export async function takeBatchQuota(deps: QuotaDeps, batch: BatchRecord): Promise<boolean> {
  if (batch.admittedAtMs !== undefined || !batch.quotaKeys) return true;
  const counters = quotaCounters(deps.quotaConfig, batch.project, batch.route).filter((c) => batch.quotaKeys!.includes(c.key));
  const amount = amountOf(batch);
  const taken: QuotaCounter[] = [];
  for (const counter of counters) {
    let outcome = await deps.quotas.takeQuota(counter.key, batch.id, amount, counter.limits);
    if (outcome === 'full' && (await reclaimFromFinalBatches(deps, counter.key))) {
      outcome = await deps.quotas.takeQuota(counter.key, batch.id, amount, counter.limits);
    }
    if (outcome === 'full') {
      for (const held of taken) await deps.quotas.returnQuota(held.key, batch.id, amount);
      return false;
    }
    taken.push(counter);
  }
  return true;
}

/** Gives back what the batch holds (again is harmless). */
export async function returnBatchQuota(deps: Pick<QuotaDeps, 'quotas'>, batch: BatchRecord): Promise<void> {
  for (const key of batch.quotaKeys ?? []) await deps.quotas.returnQuota(key, batch.id, amountOf(batch));
}

/** Gives back what batches already final (or gone) still hold of this counter; true when any was. */
async function reclaimFromFinalBatches(deps: QuotaDeps, key: string): Promise<boolean> {
  const usage = await deps.quotas.getQuota(key);
  let reclaimed = false;
  for (const holder of usage?.holders ?? []) {
    const batch = await deps.meta.getBatch(holder);
    if (batch && !FINAL.includes(batch.status)) continue;
    const amount = batch ? amountOf(batch) : undefined;
    if (!amount) continue;
    if (await deps.quotas.returnQuota(key, holder, amount)) {
      reclaimed = true;
      deps.log.log('warn', 'quota given back for a batch that had ended without it', { batchId: holder, key });
    }
  }
  return reclaimed;
}

/** Whether a batch waits for its project's quota: running, with counters to take, not admitted yet. */
export const waitsForQuota = (batch: Pick<BatchRecord, 'status' | 'quotaKeys' | 'admittedAtMs'>): boolean =>
  RUNNING.includes(batch.status) && (batch.quotaKeys?.length ?? 0) > 0 && batch.admittedAtMs === undefined;
