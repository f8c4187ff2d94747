// One result object of a running chunk (its output or its error lines), written as the lines
// finish: BlobStore.put streams the body while the chunk runs, so no chunk's lines are ever held
// together, let alone joined into one string. The object becomes visible only once end() has
// stored it whole; abort() (or a failed store) leaves nothing behind, as BlobStore.put promises.
import type { BlobStore } from '../ports.js';

/** Lines are handed to the store in pieces of about this many bytes: per-line stream overhead would cost more than the copy. */
export const PIECE_BYTES = 1024 * 1024;

type Line = string | Uint8Array;

/** Where the piece that starts at `start` ends: at least one line, then lines until PIECE_BYTES; a large line goes alone. */
function pieceEnd(lines: readonly Line[], start: number): number {
  let end = start + 1;
  let bytes = lines[start]!.length;
  while (end < lines.length && bytes < PIECE_BYTES && lines[end]!.length < PIECE_BYTES) bytes += lines[end++]!.length;
  return end;
}

/** The bytes of lines [start, end): one line as it is (no copy of a large one), several joined. */
function pieceBytes(lines: readonly Line[], start: number, end: number): Uint8Array {
  const first = lines[start]!;
  if (end === start + 1) return typeof first === 'string' ? Buffer.from(first) : first;
  const piece = lines.slice(start, end);
  if (piece.every((line) => typeof line === 'string')) return Buffer.from(piece.join(''));
  return Buffer.concat(piece.map((line) => (typeof line === 'string' ? Buffer.from(line) : line)));
}

/** Lines as a body for BlobStore.put, in pieces of about PIECE_BYTES, never joined into one string. */
export async function* linesBody(lines: Iterable<Line> | AsyncIterable<Line>): AsyncGenerator<Uint8Array> {
  let pending: Line[] = [];
  let bytes = 0;
  for await (const line of lines) {
    pending.push(line);
    bytes += line.length;
    if (bytes < PIECE_BYTES) continue;
    for (let start = 0; start < pending.length; ) {
      const end = pieceEnd(pending, start);
      yield pieceBytes(pending, start, end);
      start = end;
    }
    pending = [];
    bytes = 0;
  }
  if (pending.length > 0) yield pieceBytes(pending, 0, pending.length);
}

interface QueuedLine {
  line: Line;
  taken: () => void;
  failed: (error: unknown) => void;
}

export class LineWriter {
  private queue: QueuedLine[] = [];
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
  write(line: Line): Promise<void> {
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

  /** Hands the queued lines to the store as they come, in pieces; a line is taken once the store asks for what follows it. */
  private async *body(): AsyncGenerator<Uint8Array> {
    let holding: QueuedLine[] = [];
    let handed = 0;
    try {
      for (;;) {
        if (this.failure) throw this.failure.error;
        if (this.queue.length > 0) {
          holding = this.queue;
          this.queue = [];
          handed = 0;
          const lines = holding.map((queued) => queued.line);
          while (handed < holding.length) {
            const end = pieceEnd(lines, handed);
            yield pieceBytes(lines, handed, end);
            for (let i = handed; i < end; i++) holding[i]!.taken();
            handed = end;
          }
          holding = [];
          continue;
        }
        if (this.ended) return;
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
        this.wake = undefined;
      }
    } finally {
      // The store stopped reading (it failed, or this body did): the lines it did not take are not
      // stored, and their writes fail with the store's error once it is known.
      const rest = holding.slice(handed);
      if (rest.length > 0) {
        const failedWith = (error: unknown) => {
          for (const queued of rest) queued.failed(this.failure?.error ?? error);
        };
        this.stored.then(() => failedWith(new Error(`${this.key}: not stored`)), failedWith);
      }
    }
  }
}
