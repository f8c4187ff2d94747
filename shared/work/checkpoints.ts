// Checkpoints of a running chunk: its finished result lines, saved in small steps as objects of
// their own (batches/<id>/chunks/<index>/ckpt-<attempt>-<seq>.jsonl), so a chunk delivered again
// after a crash sends only what was not answered yet, and finalization of a chunk whose worker
// died keeps what it had finished. A checkpoint holds result lines exactly as they go in the
// output or error file; which of the two a line belongs to, and its usage, follow from the line.

import readline from 'node:readline';
import { Readable } from 'node:stream';
import { blobKeys } from '../batch/keys.js';
import { type UsageTotals, ZERO_USAGE } from '../batch/model.js';
import { addUsage, usageOf } from '../batch/results.js';
import type { Logger } from '../log.js';
import { errorMessage } from '../log.js';
import type { BlobStore, Clock } from '../ports.js';
import { linesBody } from './line-writer.js';

export interface CheckpointOptions {
  /** Least time between the starts of two checkpoints of one chunk (0: as soon as a line is finished). */
  intervalMs: number;
  /** A checkpoint is written sooner once this many finished lines wait. */
  maxLines: number;
  /** ... or once this many bytes of lines wait (default 8 MiB): large answers are saved, and let go of, soon. */
  maxBytes?: number;
  /** Checkpoint writes of one chunk in flight at once (default 4): a slow write does not hold the next back. */
  maxWrites?: number;
  /**
   * The chunk's requests on the wire now. A checkpoint is written sooner once half as many lines
   * wait (at least one): a crash then costs the requests in flight, and at most half as many again
   * of lines finished but not yet saved, whatever the interval, at one write per that many lines.
   */
  inFlight?: () => number;
}

export const DEFAULT_CHECKPOINTS: CheckpointOptions = { intervalMs: 2_000, maxLines: 500 };
export const DEFAULT_MAX_PENDING_BYTES = 8 * 1024 * 1024;

/** What a chunk outcome needs of a checkpointed line: which file it belongs to, and its usage. */
export interface CheckpointedLine {
  /** Goes to the output file (a 2xx answer); otherwise to the error file. */
  success: boolean;
  usage: UsageTotals;
}

/** A checkpointed line with its text, as streamed from the checkpoint objects. */
export interface SavedLine extends CheckpointedLine {
  customId: string;
  /** The line as stored, newline included. */
  text: string;
}

export interface Checkpoints {
  /** Finished lines by custom_id, each once (without their text: see checkpointLines). */
  lines: Map<string, CheckpointedLine>;
  /** The checkpoint objects read. */
  keys: string[];
}

/** One stored result line, or undefined when it cannot be read (objects are stored whole, so that is not expected). */
function parseSaved(raw: string): SavedLine | undefined {
  let line: { custom_id?: unknown; response?: { status_code?: unknown; body?: unknown } | null };
  try {
    line = JSON.parse(raw) as typeof line;
  } catch {
    return undefined; // a line we cannot read is run again
  }
  if (typeof line.custom_id !== 'string') return undefined;
  const status = line.response?.status_code;
  const success = typeof status === 'number' && status >= 200 && status < 300;
  return { customId: line.custom_id, text: `${raw}\n`, success, usage: success ? usageOf(line.response?.body) : ZERO_USAGE };
}

/**
 * The lines of these checkpoint objects, streamed one at a time (never a whole object in memory),
 * keeping the first line seen for each custom_id. Two passes over the same keys see the same lines.
 */
export async function* checkpointLines(blobs: BlobStore, keys: readonly string[]): AsyncGenerator<SavedLine> {
  const seen = new Set<string>();
  for (const key of keys) {
    const input = Readable.from(await blobs.get(key));
    for await (const raw of readline.createInterface({ input, crlfDelay: Infinity })) {
      if (!raw) continue;
      const line = parseSaved(raw);
      if (!line || seen.has(line.customId)) continue;
      seen.add(line.customId);
      yield line;
    }
  }
}

/** Reads the checkpoints of a chunk (their custom_ids, outcomes and usage); `keys` when the caller already listed them. */
export async function readCheckpoints(blobs: BlobStore, batchId: string, index: number, keys?: string[]): Promise<Checkpoints> {
  const found = keys ?? (await blobs.list(blobKeys.checkpointsOfChunk(batchId, index)));
  const lines = new Map<string, CheckpointedLine>();
  for await (const line of checkpointLines(blobs, found)) lines.set(line.customId, { success: line.success, usage: line.usage });
  return { lines, keys: found };
}

/** Every checkpoint object of a batch, grouped by chunk index (one listing). */
export async function listCheckpoints(blobs: BlobStore, batchId: string): Promise<Map<number, string[]>> {
  const prefix = blobKeys.checkpointsOfBatch(batchId);
  const byChunk = new Map<number, string[]>();
  for (const key of await blobs.list(prefix)) {
    const match = /^(\d+)\/ckpt-/.exec(key.slice(prefix.length));
    if (!match) continue;
    const index = Number(match[1]);
    byChunk.set(index, [...(byChunk.get(index) ?? []), key]);
  }
  return byChunk;
}

/** Counts and usage of checkpointed lines, as a chunk outcome counts them. */
export function summarize(lines: Iterable<CheckpointedLine>): { completed: number; failed: number; usage: UsageTotals } {
  let completed = 0;
  let failed = 0;
  let usage = ZERO_USAGE;
  for (const line of lines) {
    if (line.success) {
      completed += 1;
      usage = addUsage(usage, line.usage);
    } else failed += 1;
  }
  return { completed, failed, usage };
}

/** Lines of a small checkpoint go as one buffer (a store may write it at once), larger ones as a stream. */
const WHOLE_CHECKPOINT_BYTES = 256 * 1024;

function checkpointBody(lines: PendingLine[]): Uint8Array | AsyncIterable<Uint8Array> {
  let bytes = 0;
  for (const pending of lines) bytes += pending.line.length;
  if (bytes > WHOLE_CHECKPOINT_BYTES) return linesBody(lines.map((pending) => pending.line));
  return Buffer.concat(lines.map((pending) => (typeof pending.line === 'string' ? Buffer.from(pending.line) : pending.line)));
}

interface PendingLine {
  line: string | Uint8Array;
  /** Settles the promise add() returned. */
  saved: () => void;
}

/**
 * Saves a running chunk's finished lines in small steps: a write starts once `maxLines` lines (or
 * `maxBytes` of them, or half as many as the chunk has requests in flight) wait, or `intervalMs`
 * has passed since the previous one started, with at most `maxWrites` in flight. A failed write
 * keeps its lines for the next one: checkpoints only save work, they never decide an outcome.
 */
export class CheckpointWriter {
  private pending: PendingLine[] = [];
  private pendingBytes = 0;
  private readonly writing = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | undefined;
  private seq = 0;
  private lastWriteAt: number;
  /** After a failed write, the next waits a second whatever the interval. */
  private notBefore = -Infinity;
  private closed = false;
  /** The checkpoint objects this writer stored. */
  readonly keys: string[] = [];

  constructor(
    private readonly deps: { blobs: BlobStore; clock: Clock; log: Logger },
    private readonly batchId: string,
    private readonly index: number,
    private readonly attempt: string,
    private readonly options: CheckpointOptions = DEFAULT_CHECKPOINTS,
  ) {
    // The first checkpoint is due one interval after the chunk starts, like every later one.
    this.lastWriteAt = deps.clock.now();
  }

  /**
   * Adds a finished line (newline included). Resolves once the writer no longer holds it: it is in
   * a stored checkpoint, or the writer was closed with the line still pending (left to the chunk's
   * result). Never rejects.
   */
  add(line: string | Uint8Array): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise<void>((saved) => {
      this.pending.push({ line, saved });
      this.pendingBytes += line.length;
      this.schedule();
    });
  }

  /**
   * Stops: waits for the writes in progress; lines still pending are left to the chunk's result.
   * With `flush` (the chunk is handed back unfinished, so no result will hold them), the lines
   * still pending are stored first, in one last checkpoint; it rejects when that cannot be stored.
   */
  async close(options: { flush?: boolean } = {}): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await Promise.all([...this.writing]);
    const lines = this.pending.splice(0);
    this.pendingBytes = 0;
    try {
      if (options.flush && lines.length > 0) {
        const key = blobKeys.checkpoint(this.batchId, this.index, this.attempt, this.seq++);
        await this.deps.blobs.put(key, checkpointBody(lines));
        this.keys.push(key);
      }
    } finally {
      this.settle(lines);
    }
  }

  private settle(lines: PendingLine[]): void {
    for (const line of lines) line.saved();
  }

  private schedule(): void {
    if (this.closed || this.writing.size >= (this.options.maxWrites ?? 4) || this.pending.length === 0) return;
    const now = this.deps.clock.now();
    const dueInMs = Math.max(this.lastWriteAt + this.options.intervalMs, this.notBefore) - now;
    const enough =
      this.pending.length >= this.options.maxLines ||
      this.pendingBytes >= (this.options.maxBytes ?? DEFAULT_MAX_PENDING_BYTES) ||
      (this.options.inFlight !== undefined && this.pending.length >= Math.max(1, Math.ceil(this.options.inFlight() / 2)));
    if (dueInMs <= 0 || (enough && now >= this.notBefore)) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = undefined;
      this.write();
    } else if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.schedule();
      }, dueInMs);
      this.timer.unref();
    }
  }

  private write(): void {
    const lines = this.pending;
    const bytes = this.pendingBytes;
    this.pending = [];
    this.pendingBytes = 0;
    const key = blobKeys.checkpoint(this.batchId, this.index, this.attempt, this.seq++);
    this.lastWriteAt = this.deps.clock.now();
    const write: Promise<void> = this.deps.blobs
      .put(key, checkpointBody(lines))
      .then(
        () => {
          this.keys.push(key);
          this.settle(lines);
        },
        (error: unknown) => {
          this.pending = [...lines, ...this.pending];
          this.pendingBytes += bytes;
          this.notBefore = this.deps.clock.now() + 1_000;
          this.deps.log.log('warn', 'checkpoint write failed', { batchId: this.batchId, chunk: this.index, error: errorMessage(error) });
        },
      )
      .finally(() => {
        this.writing.delete(write);
        this.schedule();
      });
    this.writing.add(write);
  }
}
