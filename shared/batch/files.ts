// The File records the service makes: uploaded input files and the files a batch produces (its
// output file, its error file), built in one place so that their fields and lifetimes agree.
import { derivedId } from '../ids.js';
import { blobKeys } from './keys.js';
import type { BatchRecord, FileRecord } from './model.js';

/** How long a file lives when nobody names a lifetime: 30 days, the Files API's longest. */
export const DEFAULT_FILE_RETENTION_SECONDS = 30 * 24 * 3600;

export interface NewFile {
  id: string;
  project: string;
  filename: string;
  purpose: FileRecord['purpose'];
  bytes: number;
  /** Seconds the file lives after its creation; null for the default. */
  expiresAfterSeconds: number | null;
  /** Its request lines, when counted as it came in. */
  requests?: number;
  /** The model its first request names, when read as it came in. */
  model?: string;
}

export function fileRecord(file: NewFile, nowMs: number): FileRecord {
  return {
    id: file.id,
    project: file.project,
    filename: file.filename,
    purpose: file.purpose,
    bytes: file.bytes,
    createdAtMs: nowMs,
    expiresAtMs: nowMs + (file.expiresAfterSeconds ?? DEFAULT_FILE_RETENTION_SECONDS) * 1_000,
    blobKey: blobKeys.file(file.id),
    ...(file.requests !== undefined ? { requests: file.requests } : {}),
    ...(file.model !== undefined ? { model: file.model } : {}),
  };
}

export type BatchFileKind = 'output' | 'error';

/** An id that depends only on the batch, so a step that runs twice makes the same file. */
export function derivedFileId(batchId: string, kind: BatchFileKind): string {
  return derivedId('file-', `${batchId}:${kind}`);
}

/** The record of a batch's output or error file, living as long as the batch's output_expires_after says. */
export function batchFileRecord(
  batch: Pick<BatchRecord, 'id' | 'project' | 'outputExpiresAfterSeconds'>,
  kind: BatchFileKind,
  bytes: number,
  nowMs: number,
): FileRecord {
  const id = derivedFileId(batch.id, kind);
  return fileRecord(
    {
      id,
      project: batch.project,
      filename: `${batch.id}_${kind}.jsonl`,
      purpose: 'batch_output',
      bytes,
      expiresAfterSeconds: batch.outputExpiresAfterSeconds,
    },
    nowMs,
  );
}
