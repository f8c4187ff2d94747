// What the batch commands do with a Batch: wait for its end with progress, download its files,
// and describe it for a person.
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { setTimeout as sleep } from 'node:timers/promises';
import type OpenAI from 'openai';
import type { Batch } from 'openai/resources/batches';
import { TERMINAL_STATUSES } from './exit.js';
import { type BatchProgress, batchProgress, type Output } from './progress.js';

/** Thrown when Ctrl-C stops a wait: the batch itself goes on. */
export class Interrupted extends Error {
  constructor(readonly batchId: string) {
    super(`stopped waiting; ${batchId} goes on (batch wait ${batchId})`);
    this.name = 'Interrupted';
  }
}

export interface WaitOptions {
  pollMs: number;
  progress: Output;
  signal: AbortSignal;
}

/** Polls until the batch ends, showing its progress; returns the final Batch. */
export async function waitForEnd(client: OpenAI, id: string, options: WaitOptions): Promise<Batch> {
  const progress: BatchProgress = batchProgress(options.progress);
  let reached = false;
  try {
    for (;;) {
      // Once the service has answered, a network blip during a long wait is retried for about 20 s.
      const batch = await client.batches.retrieve(id, { signal: options.signal, ...(reached ? { maxRetries: 6 } : {}) });
      reached = true;
      progress.update(batch);
      if (TERMINAL_STATUSES.has(batch.status)) return batch;
      await sleep(options.pollMs, undefined, { signal: options.signal });
    }
  } catch (error) {
    if (options.signal.aborted) throw new Interrupted(id);
    throw error;
  } finally {
    progress.stop();
  }
}

export const RESULT_FILES = { output: 'output.jsonl', errors: 'errors.jsonl', summary: 'summary.json' } as const;

/**
 * Writes output.jsonl, errors.jsonl and summary.json (the Batch object) into dir. A file the batch
 * does not have is written empty, so a script finds the same three files for every batch.
 */
export async function downloadResults(client: OpenAI, batch: Batch, dir: string): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const written = [
    await saveFile(client, batch.output_file_id, path.join(dir, RESULT_FILES.output)),
    await saveFile(client, batch.error_file_id, path.join(dir, RESULT_FILES.errors)),
  ];
  const summary = path.join(dir, RESULT_FILES.summary);
  await writeFile(summary, `${JSON.stringify(batch, null, 2)}\n`);
  return [...written, summary];
}

/** Streams a file's content to target through a temporary name, so a broken download leaves no half file. */
async function saveFile(client: OpenAI, fileId: string | null | undefined, target: string): Promise<string> {
  if (!fileId) {
    await writeFile(target, '');
    return target;
  }
  const response = await client.files.content(fileId);
  const partial = `${target}.partial`;
  try {
    if (!response.body) throw new Error(`file ${fileId} answered without content`);
    await pipeline(Readable.fromWeb(response.body as WebReadableStream<Uint8Array>), createWriteStream(partial));
    await rename(partial, target);
  } catch (error) {
    await rm(partial, { force: true });
    throw error;
  }
  return target;
}

const isoTime = (seconds: number | null | undefined) => (seconds ? new Date(seconds * 1000).toISOString() : undefined);

/** A batch as `name value` lines, for `batch status`. */
export function describeBatch(batch: Batch): string {
  const counts = batch.request_counts;
  const rows: [string, string | undefined][] = [
    ['id', batch.id],
    ['status', batch.status],
    ['endpoint', batch.endpoint],
    ['window', batch.completion_window],
    [
      'requests',
      counts && counts.total > 0
        ? `${counts.completed + counts.failed}/${counts.total} done (${counts.completed} completed, ${counts.failed} failed)`
        : undefined,
    ],
    ['input', batch.input_file_id],
    ['output', batch.output_file_id ?? undefined],
    ['errors', batch.error_file_id ?? undefined],
    ['created', isoTime(batch.created_at)],
    ['started', isoTime(batch.in_progress_at)],
    ['ended', isoTime(batch.completed_at ?? batch.failed_at ?? batch.expired_at ?? batch.cancelled_at)],
    ['expires', isoTime(batch.expires_at)],
    [
      'metadata',
      batch.metadata && Object.keys(batch.metadata).length > 0
        ? Object.entries(batch.metadata)
            .map(([key, value]) => `${key}=${value}`)
            .join(' ')
        : undefined,
    ],
  ];
  const lines = rows.filter(([, value]) => value !== undefined).map(([name, value]) => `${name.padEnd(9)} ${value}`);
  return [...lines, ...validationErrors(batch)].join('\n');
}

const SHOWN_VALIDATION_ERRORS = 20;

/** A failed batch's line-numbered validation errors, the first twenty of them. */
export function validationErrors(batch: Batch): string[] {
  const data = batch.errors?.data ?? [];
  const lines = data
    .slice(0, SHOWN_VALIDATION_ERRORS)
    .map((error) => `${error.line ? `line ${error.line}: ` : ''}${error.code ?? 'error'}: ${error.message ?? ''}`.trimEnd());
  if (data.length > SHOWN_VALIDATION_ERRORS)
    lines.push(`... and ${data.length - SHOWN_VALIDATION_ERRORS} more (summary.json has them all)`);
  return lines;
}

/** Batches as aligned columns, for `batch list`. */
export function batchTable(batches: Batch[]): string {
  const header = ['ID', 'STATUS', 'DONE', 'FAILED', 'CREATED', 'ENDPOINT'];
  const rows = batches.map((batch) => {
    const counts = batch.request_counts ?? { total: 0, completed: 0, failed: 0 };
    return [
      batch.id,
      batch.status,
      `${counts.completed + counts.failed}/${counts.total}`,
      String(counts.failed),
      isoTime(batch.created_at) ?? '',
      batch.endpoint,
    ];
  });
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)));
  return [header, ...rows]
    .map((row) =>
      row
        .map((cell, column) => cell.padEnd(widths[column]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
