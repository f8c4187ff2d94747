// The in-flight budget of upstream answer bytes (MAX_INFLIGHT_RESPONSE_BYTES): how many bytes of
// answers one process holds at once, counted from the first byte read off the wire until the
// result line made of the answer has been handed to its result object and checkpoint. Each request
// holds a lease on the budget. Two rules keep memory bounded without ever wedging:
//
//   - a request goes on the wire only while the budget is not spent (roomToStart, asked where the
//     upstream issues requests), so no new answer is started that could not be held;
//   - an answer being read waits for room before it takes more bytes. When every byte held
//     belongs to answers still being read, nothing would ever give room back, so the oldest of them
//     goes on past the budget; otherwise room comes back as soon as the lines of answers read
//     whole are written, which never needs the budget.
//
// At most the budget plus one answer (MAX_RESPONSE_BYTES) are held, however large the chunk or
// its answers. Answers that fit the budget many times over (chat answers of a few KB) never wait:
// then the cost is a counter per piece read.

export class ResponseBudget {
  private used = 0;
  private peak = 0;
  /** Leases whose answer is being read, oldest first (a Map keeps insertion order), with the bytes each read so far. */
  private readonly reading = new Map<ResponseLease, number>();
  /** The part of `used` held by answers still being read. */
  private readingBytes = 0;
  private waiters: (() => void)[] = [];

  constructor(readonly limitBytes: number) {
    if (!(limitBytes > 0)) throw new Error(`the in-flight response budget must be positive, not ${limitBytes}`);
  }

  /** Answer bytes held now. */
  get usedBytes(): number {
    return this.used;
  }

  /** The most answer bytes held at once so far. */
  get peakBytes(): number {
    return this.peak;
  }

  /** Requests (or answers being read) waiting for room. */
  get waiting(): number {
    return this.waiters.length;
  }

  lease(): ResponseLease {
    return new ResponseLease(this);
  }

  /** Resolves once the budget is not spent: a new request may go on the wire. Undefined when it is not spent now. */
  roomToStart(): Promise<void> | undefined {
    return this.used < this.limitBytes ? undefined : this.waitFor(() => this.used < this.limitBytes);
  }

  /** @internal ResponseLease's bookkeeping. */
  async take(lease: ResponseLease, bytes: number): Promise<void> {
    if (!this.reading.has(lease)) this.reading.set(lease, 0);
    const fits = () =>
      this.used + bytes <= this.limitBytes || (this.reading.keys().next().value === lease && this.used === this.readingBytes);
    if (!fits()) await this.waitFor(fits);
    this.used += bytes;
    this.readingBytes += bytes;
    this.reading.set(lease, (this.reading.get(lease) ?? 0) + bytes);
    if (this.used > this.peak) this.peak = this.used;
  }

  /** @internal */
  stopReading(lease: ResponseLease): void {
    const bytes = this.reading.get(lease);
    if (bytes === undefined) return;
    this.reading.delete(lease);
    this.readingBytes -= bytes;
    this.wake();
  }

  /** @internal */
  give(bytes: number): void {
    this.used -= bytes;
    this.wake();
  }

  private async waitFor(condition: () => boolean): Promise<void> {
    while (!condition()) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  private wake(): void {
    if (this.waiters.length === 0) return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const resolve of waiters) resolve();
  }
}

/** One request's share of the budget: the bytes of its answer, held until release(). */
export class ResponseLease {
  private held = 0;

  constructor(readonly budget: ResponseBudget) {}

  get bytes(): number {
    return this.held;
  }

  /**
   * Counts `bytes` more of this request's answer; waits while the budget is spent, unless every
   * byte held is in answers still being read and this is the oldest of them.
   */
  async take(bytes: number): Promise<void> {
    await this.budget.take(this, bytes);
    this.held += bytes;
  }

  /** The answer is read (or given up): it no longer reads ahead of the others. Its bytes stay held. */
  doneReading(): void {
    this.budget.stopReading(this);
  }

  /** Gives back everything this lease holds (again is harmless). */
  release(): void {
    this.budget.stopReading(this);
    if (this.held === 0) return;
    const bytes = this.held;
    this.held = 0;
    this.budget.give(bytes);
  }
}
