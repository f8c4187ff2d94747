// Requests per minute and tokens per minute for one route, shared by every batch on it: two token
// buckets taken together, first come first served.
//
// Why our own, in a few dozen lines: bottleneck is unmaintained; `limiter` and
// rate-limiter-flexible's RateLimiterQueue read the wall clock and set their own timers (no
// injected Clock, so no deterministic tests), take one kind of token at a time (a request would
// hold its RPM token while it waits for TPM tokens), refuse a cost larger than one interval's
// allowance (a single long prompt under a small TPM would never run), and have no way to correct
// a charge once the response tells the real token count. This one does all four.
//
// Each bucket holds at most one second's allowance (at least one request, or one request's
// tokens when a single request is larger), so traffic is paced rather than sent in a burst at
// the top of each minute, and any 60 s carries at most the limit plus one second's allowance.
import type { Clock } from '../ports.js';

export interface RateLimits {
  requestsPerMinute?: number;
  tokensPerMinute?: number;
}

class Bucket {
  readonly capacity: number;
  private readonly perMs: number;
  level: number;
  private at: number;

  constructor(perMinute: number, now: number) {
    this.perMs = perMinute / 60_000;
    this.capacity = Math.max(1, perMinute / 60);
    this.level = this.capacity;
    this.at = now;
  }

  refill(now: number): void {
    if (now > this.at) this.level = Math.min(this.capacity, this.level + (now - this.at) * this.perMs);
    this.at = Math.max(this.at, now);
  }

  /** A cost larger than the bucket is let through when the bucket is full, and leaves it in debt. */
  fits(cost: number): boolean {
    return this.level >= Math.min(cost, this.capacity);
  }

  /** Milliseconds until `fits(cost)`. */
  waitFor(cost: number): number {
    return Math.max(0, (Math.min(cost, this.capacity) - this.level) / this.perMs);
  }
}

interface Waiter {
  tokens: number;
  stillWanted: () => boolean;
  resolve: (granted: boolean) => void;
}

export class RateLimiter {
  private readonly requests: Bucket | undefined;
  private readonly tokens: Bucket | undefined;
  private readonly queue: Waiter[] = [];
  private head = 0;
  private sleeping = false;

  constructor(
    limits: RateLimits,
    private readonly clock: Clock,
  ) {
    const now = clock.now();
    this.requests = limits.requestsPerMinute ? new Bucket(limits.requestsPerMinute, now) : undefined;
    this.tokens = limits.tokensPerMinute ? new Bucket(limits.tokensPerMinute, now) : undefined;
  }

  /** True when neither limit is set: callers may skip the limiter entirely. */
  get unlimited(): boolean {
    return !this.requests && !this.tokens;
  }

  /** Requests waiting for their turn. */
  get waiting(): number {
    return this.queue.length - this.head;
  }

  /**
   * Waits until one request of `tokens` estimated tokens may go, and takes both from the buckets.
   * Resolves false, taking nothing, when `stillWanted` says no by the time its turn comes.
   */
  acquire(tokens: number, stillWanted: () => boolean = () => true): Promise<boolean> {
    if (this.waiting === 0 && this.tryTake(tokens)) return Promise.resolve(true);
    return new Promise((resolve) => {
      this.queue.push({ tokens, stillWanted, resolve });
      this.pump();
    });
  }

  /** Corrects a charge once the real cost is known: positive takes more (possibly into debt), negative gives back. */
  adjust(tokens: number): void {
    if (!this.tokens || tokens === 0) return;
    this.tokens.refill(this.clock.now());
    this.tokens.level = Math.min(this.tokens.capacity, this.tokens.level - tokens);
    if (tokens < 0) this.pump();
  }

  /** Gives back what an acquire took, for a request that then did not go. */
  release(tokens: number): void {
    const now = this.clock.now();
    if (this.requests) {
      this.requests.refill(now);
      this.requests.level = Math.min(this.requests.capacity, this.requests.level + 1);
    }
    this.adjust(-tokens);
    this.pump();
  }

  /** Current bucket levels, for tests and logs. */
  levels(): { requests: number | undefined; tokens: number | undefined } {
    const now = this.clock.now();
    this.requests?.refill(now);
    this.tokens?.refill(now);
    return { requests: this.requests?.level, tokens: this.tokens?.level };
  }

  private tryTake(tokens: number): boolean {
    const now = this.clock.now();
    this.requests?.refill(now);
    this.tokens?.refill(now);
    if ((this.requests && !this.requests.fits(1)) || (this.tokens && !this.tokens.fits(tokens))) return false;
    if (this.requests) this.requests.level -= 1;
    if (this.tokens) this.tokens.level -= tokens;
    return true;
  }

  private pump(): void {
    while (this.head < this.queue.length) {
      const waiter = this.queue[this.head]!;
      if (!waiter.stillWanted()) {
        this.shift().resolve(false);
        continue;
      }
      if (!this.tryTake(waiter.tokens)) {
        this.sleepUntilFits(waiter.tokens);
        return;
      }
      this.shift().resolve(true);
    }
  }

  private shift(): Waiter {
    const waiter = this.queue[this.head++]!;
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    return waiter;
  }

  private sleepUntilFits(tokens: number): void {
    if (this.sleeping) return;
    const wait = Math.max(this.requests?.waitFor(1) ?? 0, this.tokens?.waitFor(tokens) ?? 0);
    this.sleeping = true;
    void this.clock.sleep(Math.max(1, Math.ceil(wait))).then(() => {
      this.sleeping = false;
      this.pump();
    });
  }
}

const count = (text: unknown): number => (typeof text === 'string' ? text.length : 0);

/** Characters of the text a request sends: message contents, input, prompt, instructions. */
function textLength(value: unknown, depth = 0): number {
  if (typeof value === 'string') return value.length;
  if (depth > 6 || !value || typeof value !== 'object') return 0;
  if (Array.isArray(value)) {
    let sum = 0;
    for (const item of value) sum += textLength(item, depth + 1);
    return sum;
  }
  const record = value as Record<string, unknown>;
  return textLength(record.content, depth + 1) + count(record.text) + count(record.input_text) + textLength(record.input, depth + 1);
}

/**
 * A request's tokens before it is sent, as rate limiters upstream count them: about four
 * characters a token of what it sends, plus the most it may generate. Corrected by the response's
 * usage once it comes back.
 */
export function estimateTokens(body: Record<string, unknown>): number {
  const chars = textLength(body.messages) + textLength(body.input) + textLength(body.prompt) + count(body.instructions);
  const output = body.max_completion_tokens ?? body.max_tokens ?? body.max_output_tokens;
  return Math.max(1, Math.ceil(chars / 4)) + (typeof output === 'number' && output > 0 ? output : 0);
}
