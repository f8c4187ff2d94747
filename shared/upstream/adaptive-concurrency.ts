// Adaptive concurrency for one route: how many requests may be on the wire at once, between 1 and
// the route's maxConcurrency, learned from what the upstream answers.
//
// The limit moves once per window of answers (at least `minWindow`, and at least the limit, so
// roughly once per round trip):
//   - overload: more than `overloadTolerance` of the window's answers are 429 or 503: multiply
//     by `backoff` (0.75). A tolerance rather than "any 429" because upstreams answer 429 to single
//     requests for reasons of their own (a long prompt against a token limit); backing off on each
//     would pin the limit near one under a few percent of such answers.
//   - latency: the window's mean latency of real answers is more than `latencyTolerance` (2×) the
//     baseline (the lowest window mean seen, drifting slowly up so a lasting change is accepted),
//     and more than `latencySlackMs` (250 ms) above it, a rise our own busy event loop cannot
//     explain: multiply by 0.9. The upstream is queueing our requests; more in flight only adds
//     waiting.
//   - otherwise, if the window used at least half the limit: grow by 10% (at least 1), up to max.
// Answers to requests that started before the last decrease are not counted against the new
// limit: they describe the old one (the classic guard against backing off twice for one burst).
import type { Clock } from '../ports.js';
import { FairQueue, type Tenant } from '../schedule/fair-queue.js';

export type SampleOutcome = 'ok' | 'overload' | 'error';

export interface LimitChange {
  limit: number;
  previous: number;
  reason: 'overload' | 'latency' | 'growth';
  /** The closed window: answers, 429/503s among them, mean latency of real answers (ms), and the baseline. */
  window: { samples: number; overloads: number; meanLatencyMs: number | undefined; baselineMs: number | undefined };
}

export interface AdaptiveConcurrencyOptions {
  max: number;
  min?: number;
  /** The first limit; default max. */
  initial?: number;
  minWindow?: number;
  overloadTolerance?: number;
  latencyTolerance?: number;
  latencySlackMs?: number;
  backoff?: number;
  clock: Clock;
  /** Told about each change of the limit. */
  onChange?: (change: LimitChange) => void;
}

/** The algorithm alone: feed it samples, read `limit`. */
export class AdaptiveLimit {
  private value: number;
  private readonly min: number;
  private samples = 0;
  private overloads = 0;
  private answered = 0;
  private latencySum = 0;
  private peakInFlight = 0;
  private baseline: number | undefined;
  private lastDecreaseAt = -Infinity;

  constructor(private readonly options: AdaptiveConcurrencyOptions) {
    this.min = Math.max(1, Math.min(options.min ?? 1, options.max));
    this.value = Math.max(this.min, Math.min(options.max, options.initial ?? options.max));
  }

  /** Requests allowed in flight now. */
  get limit(): number {
    return Math.floor(this.value);
  }

  get max(): number {
    return this.options.max;
  }

  /**
   * One finished attempt: when it started, how long it took, what came back, and how many were in
   * flight when it started (to tell whether the limit was being used at all).
   */
  sample(startedAt: number, latencyMs: number, outcome: SampleOutcome, inFlight: number): void {
    if (startedAt < this.lastDecreaseAt) return;
    this.samples += 1;
    if (inFlight > this.peakInFlight) this.peakInFlight = inFlight;
    if (outcome === 'overload') this.overloads += 1;
    else if (outcome === 'ok') {
      this.answered += 1;
      this.latencySum += latencyMs;
    }
    if (this.samples >= Math.max(this.options.minWindow ?? 10, this.limit)) this.closeWindow();
  }

  private closeWindow(): void {
    const previous = this.limit;
    const { overloadTolerance = 0.2, latencyTolerance = 2, latencySlackMs = 250, backoff = 0.75, max } = this.options;
    const mean = this.answered > 0 ? this.latencySum / this.answered : undefined;
    let reason: 'overload' | 'latency' | 'growth' | undefined;
    if (this.overloads > this.samples * overloadTolerance) {
      this.value = Math.max(this.min, this.value * backoff);
      reason = 'overload';
    } else if (
      mean !== undefined &&
      this.baseline !== undefined &&
      this.answered >= 5 &&
      mean > this.baseline * latencyTolerance &&
      mean - this.baseline > latencySlackMs
    ) {
      this.value = Math.max(this.min, this.value * 0.9);
      reason = 'latency';
    } else if (this.peakInFlight * 2 >= this.value && this.value < max) {
      this.value = Math.min(max, this.value + Math.max(1, this.value * 0.1));
      reason = 'growth';
    }
    const window = {
      samples: this.samples,
      overloads: this.overloads,
      meanLatencyMs: mean === undefined ? undefined : Math.round(mean),
      baselineMs: this.baseline === undefined ? undefined : Math.round(this.baseline),
    };
    if (mean !== undefined && this.answered >= 5) {
      this.baseline = this.baseline === undefined || mean < this.baseline ? mean : this.baseline + (mean - this.baseline) * 0.05;
    }
    if (reason === 'overload' || reason === 'latency') this.lastDecreaseAt = this.options.clock.now();
    this.samples = this.overloads = this.answered = this.latencySum = this.peakInFlight = 0;
    if (reason && this.limit !== previous) this.options.onChange?.({ limit: this.limit, previous, reason, window });
  }
}

export interface Permit {
  startedAt: number;
  inFlight: number;
}

/**
 * A semaphore whose size is an AdaptiveLimit. Waiters get a free slot in fair turns
 * (shared/schedule/fair-queue.ts): across projects, then across a project's batches, so a batch's
 * waiting requests never sit ahead of another batch's.
 */
export class AdaptiveConcurrency {
  readonly algorithm: AdaptiveLimit;
  private active = 0;
  private readonly waiters = new FairQueue<() => void>();

  constructor(private readonly options: AdaptiveConcurrencyOptions) {
    this.algorithm = new AdaptiveLimit(options);
  }

  /** The current limit (at most the route's max). */
  get limit(): number {
    return this.algorithm.limit;
  }

  get inFlight(): number {
    return this.active;
  }

  get waiting(): number {
    return this.waiters.size;
  }

  /**
   * Waits for a slot. Pair with `release`. `first`: ahead of its batch's other waiters (a retry of a
   * request already under way, so the chunk that holds it is not kept waiting behind its own chunk).
   * `tenant`: whose request it is, for the turns.
   */
  async acquire(first = false, tenant?: Tenant): Promise<Permit> {
    if (this.active >= this.algorithm.limit || this.waiting > 0) {
      await new Promise<void>((resolve) => this.waiters.push(tenant, resolve, { first }));
    } else {
      this.active += 1;
    }
    return { startedAt: this.options.clock.now(), inFlight: this.active };
  }

  /** Frees the slot; with a sample when an attempt went on the wire. */
  release(permit: Permit, sample?: { latencyMs: number; outcome: SampleOutcome }): void {
    this.active -= 1;
    if (sample) this.algorithm.sample(permit.startedAt, sample.latencyMs, sample.outcome, permit.inFlight);
    while (this.waiting > 0 && this.active < this.algorithm.limit) {
      this.active += 1;
      this.waiters.shift()!();
    }
  }
}
