// One result object of a running chunk (its output or its error lines), written as the lines
// finish: BlobStore.put streams the body while the chunk runs, so no chunk's lines are ever held
// together, let alone joined into one string. The object becomes visible only once end() has
// stored it whole; abort() (or a failed store) leaves nothing behind, as BlobStore.put promises.
import type { BlobStore } from '../ports.js';

interface QueuedLine {
  line: string | Uint8Array;
  taken: () => void;
  failed: (error: unknown) => void;
}

export class LineWriter {
  private readonly queue: QueuedLine[] = [];
  private wake: (() => void) | undefined;
  private ended = false;
  private failure: { error: unknown } | undefined;
  private readonly stored: Promise<{ bytes: number }>;

  constructor(
    blobs: BlobStore,
    readonly key: string,
  ) {
    this.stored = blobs.put(key, this.body());
    // A store that fails early fails every write waiting, and every later one.
    this.stored.catch((error: unknown) => this.fail(error));
  }

  /** Resolves once the store has taken the line (it no longer needs to be held); rejects if the object cannot be stored. */
  write(line: string | Uint8Array): Promise<void> {
    if (this.failure) return Promise.reject(this.failure.error);
    if (this.ended) return Promise.reject(new Error(`${this.key}: written after end`));
    return new Promise<void>((taken, failed) => {
      this.queue.push({ line, taken, failed });
      this.wake?.();
    });
  }

  /** No more lines: resolves once the object is stored. */
  end(): Promise<{ bytes: number }> {
    this.ended = true;
    this.wake?.();
    return this.stored;
  }

  /** Gives up the object: nothing is stored; waiting writes reject with `error`. */
  async abort(error: unknown): Promise<void> {
    this.fail(error);
    await this.stored.catch(() => undefined);
  }

  private fail(error: unknown): void {
    if (this.failure) return;
    this.failure = { error };
    for (const queued of this.queue.splice(0)) queued.failed(error);
    this.wake?.();
  }

  private async *body(): AsyncGenerator<Uint8Array> {
    let current: QueuedLine | undefined;
    try {
      for (;;) {
        if (this.failure) throw this.failure.error;
        current = this.queue.shift();
        if (current) {
          yield typeof current.line === 'string' ? Buffer.from(current.line) : current.line;
          // The store asked for the next piece: it has this one.
          current.taken();
          current = undefined;
          continue;
        }
        if (this.ended) return;
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
        this.wake = undefined;
      }
    } finally {
      // The store stopped reading (it failed, or this body did): the line it held is not stored.
      current?.failed(this.failure?.error ?? new Error(`${this.key}: not stored`));
    }
  }
}
