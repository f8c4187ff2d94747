// A batch's chunks go on the work queue a window at a time: the first `window` chunks at the start,
// then chunk i + window once chunk i is recorded (or given up). So one batch never floods the
// queue: a chunk of another batch, put on the queue later, waits behind at most `window` of its
// chunks, whatever its size. That matters most in AWS, where the queue is SQS's (fair queues favour
// a quiet tenant only once the noisy one holds many messages in flight, which a worker concurrency
// of 20 may never reach), and costs nothing in throughput while the window is above the number of
// chunks that run at once.
//
// Which chunks are on the queue follows from which are recorded, never from a counter that a crash
// could leave wrong: chunk j is due when it is not recorded and j < window or chunk j - window is.
// A worker enqueues the successor before its message is acknowledged, and a redelivery of a chunk
// already recorded enqueues it again, so a crash between recording and enqueueing loses nothing
// (a successor enqueued twice runs once: the chunk's record is once-only).
import type { ChunkPlanEntry } from '../batch/model.js';

/** The chunks due on the queue now, by what is recorded. */
export function dueChunks(chunks: readonly ChunkPlanEntry[], done: ReadonlySet<number>, window: number): ChunkPlanEntry[] {
  return chunks.filter((chunk) => !done.has(chunk.index) && (chunk.index < window || done.has(chunk.index - window)));
}

/** The chunk that recording chunk `index` makes due, if any (and not recorded already). */
export function successorChunk(
  chunks: readonly ChunkPlanEntry[],
  index: number,
  done: ReadonlySet<number>,
  window: number,
): ChunkPlanEntry | undefined {
  const next = chunks.find((chunk) => chunk.index === index + window);
  return next && !done.has(next.index) ? next : undefined;
}
