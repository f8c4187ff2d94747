// The result lines of a batch, while it runs and after: paged, or one looked up by custom_id.
//
// While a batch runs, its results are the objects its recorded chunks wrote (an output and an error
// object per chunk, in the BlobStore: S3 in AWS); once it has ended, its output and error files.
// A page's cursor says where the next page starts: which recorded chunks were read whole, and
// where in which object reading stopped. Chunks are recorded in any order, so a chunk recorded
// after a page was read is still read by a later page. Lines of chunks still running (their
// checkpoints) are not results yet.
import { readJsonlLines } from '../input/jsonl.js';
import { isBlankLine } from '../input/request-line.js';
import { BlobNotFoundError, type BlobStore, type MetaStore } from '../ports.js';
import { recordedChunkObjects } from './keys.js';
import { type BatchRecord, TERMINAL_STATUSES } from './model.js';

/** Where a page stopped. `c`: reading recorded chunks (`done` read whole); `f`: reading the ended batch's files. */
export type ResultsCursor =
  | { phase: 'c'; done: number[]; chunk?: number; kind?: 'o' | 'e'; offset?: number }
  | { phase: 'f'; kind: 'o' | 'e'; offset: number };

export interface ResultsPage {
  lines: unknown[];
  /** More lines are there now (a running batch may have more later whatever this says). */
  hasMore: boolean;
  /** Where the next page starts: give it back to continue, also to poll a running batch for new lines. */
  next: ResultsCursor;
}

/** The cursor was made before the batch ended: its results are now its output and error files. */
export class ResultsMoved extends Error {
  constructor(readonly batchId: string) {
    super(
      `Batch ${batchId} has ended since this cursor was made: its results are now in its output and error files. Read them again from the start (without 'after').`,
    );
    this.name = 'ResultsMoved';
  }
}

/** A cursor that points where no line starts: not one this service gave. */
export class BadResultsCursor extends Error {
  constructor() {
    super("'after' is not a cursor this service gave: pass the next_after of the previous page.");
    this.name = 'BadResultsCursor';
  }
}

interface Source {
  key: string;
  chunk?: number;
  kind: 'o' | 'e';
}

export interface ResultsDeps {
  meta: MetaStore;
  blobs: BlobStore;
}

/** The ended batch's output and error files, or undefined while it runs. */
async function fileSources(deps: ResultsDeps, batch: BatchRecord): Promise<Source[] | undefined> {
  if (!TERMINAL_STATUSES.includes(batch.status)) return undefined;
  // A batch that failed validation never ran: its error file lists BatchErrors, not result lines.
  if (batch.inProgressAtMs === null) return [];
  const sources: Source[] = [];
  for (const [kind, id] of [
    ['o', batch.outputFileId],
    ['e', batch.errorFileId],
  ] as const) {
    const file = id ? await deps.meta.getFile(batch.project, id) : undefined;
    if (file) sources.push({ key: file.blobKey, kind });
  }
  return sources;
}

/** The objects of the recorded chunks, by chunk index: output, then errors. */
function chunkSources(batch: BatchRecord): Source[] {
  return batch.doneChunks.flatMap((chunk) => {
    const recorded = recordedChunkObjects(batch, chunk);
    if (!recorded) return [];
    return [
      { key: recorded.output, chunk, kind: 'o' as const },
      { key: recorded.errors, chunk, kind: 'e' as const },
    ];
  });
}

/** Lines of `key` from byte `offset`, until `take` says stop; answers where the first unread line starts, or undefined at the end. */
async function readFrom(
  blobs: BlobStore,
  key: string,
  offset: number,
  take: (line: Buffer) => boolean,
): Promise<{ stoppedAt: number | undefined }> {
  const size = await blobs.size(key);
  if (size === undefined) throw new BlobNotFoundError(key);
  if (offset >= size) return { stoppedAt: undefined };
  for await (const line of readJsonlLines(await blobs.get(key, { start: offset, end: size }), { offset })) {
    if (isBlankLine(line.bytes)) continue;
    if (!take(line.bytes)) return { stoppedAt: line.start };
  }
  return { stoppedAt: undefined };
}

/**
 * A page of at most `limit` lines (and about `maxBytes` of them, at least one line) after `after`.
 * Throws ResultsMoved for a chunk cursor once the batch has ended.
 */
export async function resultsPage(
  deps: ResultsDeps,
  batch: BatchRecord,
  after: ResultsCursor | undefined,
  limit: number,
  maxBytes = 4 * 1024 * 1024,
): Promise<ResultsPage> {
  try {
    return await readPage(deps, batch, after, limit, maxBytes);
  } catch (error) {
    // Finalization joined the chunks' objects into the files (and deleted them) while this read.
    if (!(error instanceof BlobNotFoundError)) throw error;
    const now = await deps.meta.getBatch(batch.id);
    if (!now || !TERMINAL_STATUSES.includes(now.status)) throw error;
    if (after?.phase === 'c' && (after.done.length > 0 || after.chunk !== undefined)) throw new ResultsMoved(batch.id);
    return readPage(deps, now, undefined, limit, maxBytes);
  }
}

async function readPage(
  deps: ResultsDeps,
  batch: BatchRecord,
  after: ResultsCursor | undefined,
  limit: number,
  maxBytes: number,
): Promise<ResultsPage> {
  const files = await fileSources(deps, batch);
  const lines: unknown[] = [];
  let bytes = 0;
  const take = (line: Buffer) => {
    if (lines.length >= limit || (lines.length > 0 && bytes + line.length > maxBytes)) return false;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line.toString('utf8'));
    } catch {
      // Every line we write is JSON: reading from the middle of one means the offset was made up.
      throw new BadResultsCursor();
    }
    lines.push(parsed);
    bytes += line.length;
    return true;
  };

  if (files) {
    if (after?.phase === 'c') {
      // A cursor of a batch that was running: nothing read yet is the same as the start.
      if (after.done.length > 0 || after.chunk !== undefined) throw new ResultsMoved(batch.id);
      after = undefined;
    }
    const start = after?.phase === 'f' ? after : { kind: 'o' as const, offset: 0 };
    const from = Math.max(
      0,
      files.findIndex((source) => source.kind === start.kind),
    );
    for (let i = from; i < files.length; i++) {
      const source = files[i]!;
      const offset = i === from && source.kind === start.kind ? start.offset : 0;
      const { stoppedAt } = await readFrom(deps.blobs, source.key, offset, take);
      if (stoppedAt !== undefined) return { lines, hasMore: true, next: { phase: 'f', kind: source.kind, offset: stoppedAt } };
    }
    const last = files.at(-1);
    const end = last ? { kind: last.kind, offset: (await deps.blobs.size(last.key)) ?? 0 } : { kind: 'e' as const, offset: 0 };
    return { lines, hasMore: false, next: { phase: 'f', ...end } };
  }

  if (after?.phase === 'f') throw new ResultsMoved(batch.id);
  const done = new Set(after?.done ?? []);
  const resume = after?.chunk;
  const sources = chunkSources(batch).filter((source) => !done.has(source.chunk!));
  // The chunk a page stopped in is read on from where it stopped, before any other.
  const ordered =
    resume === undefined ? sources : [...sources.filter((s) => s.chunk === resume), ...sources.filter((s) => s.chunk !== resume)];
  for (const source of ordered) {
    if (source.chunk === resume && after?.kind === 'e' && source.kind === 'o') continue;
    const offset = source.chunk === resume && source.kind === after?.kind ? (after?.offset ?? 0) : 0;
    const { stoppedAt } = await readFrom(deps.blobs, source.key, offset, take);
    if (stoppedAt !== undefined) {
      return {
        lines,
        hasMore: true,
        next: { phase: 'c', done: [...done].sort((a, b) => a - b), chunk: source.chunk!, kind: source.kind, offset: stoppedAt },
      };
    }
    if (source.kind === 'e') done.add(source.chunk!);
  }
  return { lines, hasMore: false, next: { phase: 'c', done: [...done].sort((a, b) => a - b) } };
}

/**
 * The result line of `customId`, or undefined when there is none yet. It reads the result objects
 * in order until it finds the line: in AWS one S3 GET per object read (two per recorded chunk
 * while the batch runs, two files once it ended) and, at worst, every result byte so far.
 */
export async function findResult(deps: ResultsDeps, batch: BatchRecord, customId: string): Promise<unknown | undefined> {
  try {
    return await findIn(deps, batch, customId);
  } catch (error) {
    if (!(error instanceof BlobNotFoundError)) throw error;
    const now = await deps.meta.getBatch(batch.id);
    if (!now || !TERMINAL_STATUSES.includes(now.status)) throw error;
    return findIn(deps, now, customId);
  }
}

async function findIn(deps: ResultsDeps, batch: BatchRecord, customId: string): Promise<unknown | undefined> {
  const sources = (await fileSources(deps, batch)) ?? chunkSources(batch);
  // Result lines are written by JSON.stringify: the custom_id appears exactly so.
  const needle = Buffer.from(`"custom_id":${JSON.stringify(customId)}`);
  let found: unknown;
  for (const source of sources) {
    await readFrom(deps.blobs, source.key, 0, (line) => {
      if (line.indexOf(needle) < 0) return true;
      const parsed = JSON.parse(line.toString('utf8')) as { custom_id?: unknown };
      if (parsed.custom_id !== customId) return true;
      found = parsed;
      return false;
    });
    if (found !== undefined) return found;
  }
  return undefined;
}
