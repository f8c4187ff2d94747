// Retrying a batch: a new batch of the lines of an ended batch that landed in its error file
// (those with chosen error codes or HTTP statuses). Its input is built here, from the original
// input file read by the chunk plan's byte ranges: the user uploads nothing again. The two batches
// are linked both ways (retryOf on the new one, retriedBy on the old one). A batch has at most one
// retry (its retry may be retried in turn).
//
// What it holds in memory: the custom_ids chosen for the retry (at most the batch's size,
// MAX_REQUESTS_PER_BATCH); the files themselves stream through, a line at a time.
import { derivedId } from '../ids.js';
import { readJsonlLines } from '../input/jsonl.js';
import { isBlankLine, parseRequestLine } from '../input/request-line.js';
import type { BlobStore, MetaStore } from '../ports.js';
import { type CreateDeps, createBatch } from './create.js';
import { fileRecord } from './files.js';
import { blobKeys } from './keys.js';
import { type BatchRecord, TERMINAL_STATUSES } from './model.js';
import { readPlan } from './steps.js';

/**
 * The ids of a batch's retry and of its input file depend only on the batch: two retries racing
 * for one batch make the same file, and only one of them can create the batch (createBatch fails
 * for an id that exists), so a batch has at most one retry.
 */
export const retryBatchId = (batchId: string) => derivedId('batch_', `${batchId}:retry`);
const retryInputFileId = (batchId: string) => derivedId('file-', `${batchId}:retry-input`);

/** Which error lines run again: a line matches when its error code or its HTTP status is chosen. */
export interface RetrySelection {
  /** Error codes (`error.code` of the line), e.g. `batch_expired`. */
  codes: string[];
  /** HTTP statuses (`response.status_code`): a number, or a class such as `5xx`. */
  statuses: (number | `${1 | 2 | 3 | 4 | 5}xx`)[];
}

/** What is retried when the caller names nothing: what may well succeed on another try. */
export const RETRIABLE: RetrySelection = {
  codes: ['batch_expired', 'batch_cancelled'],
  statuses: [408, 409, 429, '5xx'],
};

/** Why a batch cannot be retried: a conflict with its state, in words for the user. */
export class RetryRefused extends Error {
  constructor(
    message: string,
    readonly code: 'batch_not_ended' | 'already_retried' | 'nothing_to_retry' | 'input_file_gone',
  ) {
    super(message);
    this.name = 'RetryRefused';
  }
}

export interface RetryDeps extends CreateDeps {
  meta: MetaStore;
  blobs: BlobStore;
}

interface ErrorLineFields {
  custom_id?: unknown;
  response?: { status_code?: unknown } | null;
  error?: { code?: unknown } | null;
}

export function matchesSelection(line: ErrorLineFields, selection: RetrySelection): boolean {
  const code = line.error?.code;
  if (typeof code === 'string' && selection.codes.includes(code)) return true;
  const status = line.response?.status_code;
  if (typeof status !== 'number') return false;
  return selection.statuses.some((chosen) => (typeof chosen === 'number' ? chosen === status : `${Math.floor(status / 100)}xx` === chosen));
}

/** The custom_ids of the error file's lines that the selection picks. */
async function chosenCustomIds(blobs: BlobStore, errorBlobKey: string, selection: RetrySelection): Promise<Set<string>> {
  const chosen = new Set<string>();
  for await (const line of readJsonlLines(await blobs.get(errorBlobKey))) {
    if (isBlankLine(line.bytes)) continue;
    const fields = JSON.parse(line.bytes.toString('utf8')) as ErrorLineFields;
    if (typeof fields.custom_id === 'string' && matchesSelection(fields, selection)) chosen.add(fields.custom_id);
  }
  return chosen;
}

/** The request lines of the input whose custom_id is chosen, as they were written, read chunk by chunk by byte range. */
async function* chosenRequestLines(
  blobs: BlobStore,
  plan: { inputBlobKey: string; chunks: { start: number; end: number }[] },
  chosen: Set<string>,
): AsyncIterable<Uint8Array> {
  const newline = Buffer.from('\n');
  for (const chunk of plan.chunks) {
    const source = await blobs.get(plan.inputBlobKey, { start: chunk.start, end: chunk.end });
    for await (const line of readJsonlLines(source, { offset: chunk.start })) {
      if (isBlankLine(line.bytes)) continue;
      const parsed = parseRequestLine(line.bytes);
      if (parsed.ok && chosen.has(parsed.request.custom_id)) yield Buffer.concat([line.bytes, newline]);
    }
  }
}

/** Creates the retry batch of `batch` (a batch of this project, as the caller read it). */
export async function retryBatch(deps: RetryDeps, batch: BatchRecord, selection: RetrySelection): Promise<BatchRecord> {
  const { meta, blobs, clock } = deps;
  if (!TERMINAL_STATUSES.includes(batch.status)) {
    throw new RetryRefused(`Batch ${batch.id} is ${batch.status}: only a batch that has ended can be retried.`, 'batch_not_ended');
  }
  const alreadyRetried = (by: string) =>
    new RetryRefused(`Batch ${batch.id} was already retried by ${by}: retry that batch instead.`, 'already_retried');
  if (batch.retriedBy) throw alreadyRetried(batch.retriedBy);
  const retryId = retryBatchId(batch.id);
  if (await meta.getBatch(retryId)) {
    // Made by a retry that stopped before it linked the two: the link is made now.
    await meta.updateBatch(batch.id, TERMINAL_STATUSES, { retriedBy: retryId });
    throw alreadyRetried(retryId);
  }
  const errorFile = batch.errorFileId ? await meta.getFile(batch.project, batch.errorFileId) : undefined;
  const plan = await readPlan(blobs, batch.id);
  if (!errorFile || !plan) {
    throw new RetryRefused(`Batch ${batch.id} has no error file with request lines to retry.`, 'nothing_to_retry');
  }
  if ((await blobs.size(plan.inputBlobKey)) === undefined) {
    throw new RetryRefused(
      `The input file ${batch.inputFileId} of batch ${batch.id} has been deleted: its lines cannot be read again.`,
      'input_file_gone',
    );
  }
  const chosen = await chosenCustomIds(blobs, errorFile.blobKey, selection);
  if (chosen.size === 0) {
    throw new RetryRefused(`No line of batch ${batch.id}'s error file has one of the chosen error codes or statuses.`, 'nothing_to_retry');
  }

  const id = retryInputFileId(batch.id);
  const { bytes } = await blobs.put(blobKeys.file(id), chosenRequestLines(blobs, plan, chosen));
  const input = fileRecord(
    {
      id,
      project: batch.project,
      filename: `${batch.id}_retry.jsonl`,
      purpose: 'batch',
      bytes,
      expiresAfterSeconds: null,
      requests: chosen.size,
      ...(batch.model ? { model: batch.model } : {}),
    },
    clock.now(),
  );
  await meta.putFile(input);
  const retry = await createBatch(deps, {
    id: retryId,
    project: batch.project,
    inputFileId: input.id,
    endpoint: batch.endpoint,
    completionWindow: batch.completionWindow,
    windowMs: batch.expiresAtMs - batch.createdAtMs,
    metadata: batch.metadata,
    outputExpiresAfterSeconds: batch.outputExpiresAfterSeconds,
    retryOf: batch.id,
  }).catch(async (error: unknown) => {
    // Another retry of this batch, racing this one, created it first.
    if (await meta.getBatch(retryId)) throw alreadyRetried(retryId);
    throw error;
  });
  await meta.updateBatch(batch.id, TERMINAL_STATUSES, { retriedBy: retry.id });
  return retry;
}
