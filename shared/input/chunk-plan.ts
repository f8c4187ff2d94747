// The chunk plan of a valid input file: consecutive byte ranges of the file, each holding at most
// chunkMaxRequests request lines and chunkMaxBytes bytes (a line longer than that alone), so that
// a worker reads its share of the file by byte range without the rest.
import type { ChunkPlanEntry } from '../batch/model.js';

/**
 * The default cap on chunks per batch (see ValidationOptions.maxChunks): 1,000,000 requests at
 * 1,000 a chunk. The batch item then holds at most ~20 KB of chunk bookkeeping (doneChunks,
 * chunkAttempts: ~20 bytes a chunk), a twentieth of DynamoDB's 400 KB; and since every recorded
 * chunk rewrites that item, a batch's write units grow with the square of its chunks: fewer is
 * cheaper. Locally the embedded DynamoDB's compactions grow the same way: at 2,000 chunks a 2 GB
 * batch peaked ~25 MB higher (`npm run bench -- --scenario big-rss`).
 */
export const DEFAULT_MAX_CHUNKS = 1_000;

/** Plans chunks as request lines are accepted, in file order. */
export class ChunkPlanner {
  private chunks: ChunkPlanEntry[] = [];
  private current: ChunkPlanEntry | undefined;

  constructor(
    private readonly maxRequests: number,
    private readonly maxBytes: number,
  ) {}

  /** The request line whose bytes (its `\n` included) are [start, end) of the file. */
  add(start: number, end: number): void {
    const current = this.current;
    if (current !== undefined && current.requests < this.maxRequests && end - current.start <= this.maxBytes) {
      current.end = end;
      current.requests++;
    } else {
      this.current = { index: this.chunks.length, start, end, requests: 1 };
      this.chunks.push(this.current);
    }
  }

  /** Forgets the plan (an invalid file has none). */
  drop(): void {
    this.chunks = [];
    this.current = undefined;
  }

  /** The plan, with at most `maxChunks` chunks. */
  plan(maxChunks: number): ChunkPlanEntry[] {
    return capChunks(this.chunks, maxChunks);
  }
}

/**
 * At most `maxChunks` chunks: a longer plan has runs of consecutive chunks merged. The batch
 * record keeps one entry per chunk (doneChunks, chunkAttempts), and a DynamoDB item holds 400 KB.
 */
function capChunks(chunks: ChunkPlanEntry[], maxChunks: number): ChunkPlanEntry[] {
  if (chunks.length <= maxChunks) return chunks;
  const per = Math.ceil(chunks.length / maxChunks);
  const merged: ChunkPlanEntry[] = [];
  for (let i = 0; i < chunks.length; i += per) {
    const group = chunks.slice(i, i + per);
    merged.push({
      index: merged.length,
      start: group[0]!.start,
      end: group.at(-1)!.end,
      requests: group.reduce((sum, chunk) => sum + chunk.requests, 0),
    });
  }
  return merged;
}
