// Creating and cancelling an upload. The request's shape (filename, purpose) is checked at the edge;
// what the upload may hold is decided here.
import type { UploadRecord } from '../batch/model.js';
import { newUploadId } from '../ids.js';
import { UploadNotPending, UploadSizeRefused } from './errors.js';
import { expireIfDue, finishPending, MAX_UPLOAD_BYTES, UPLOAD_LIFETIME_MS, type UploadDeps } from './model.js';

export interface NewUpload {
  project: string;
  filename: string;
  bytes: number;
  mimeType: string;
  /** Seconds the completed file lives (expires_after); null for the default. */
  fileExpiresAfterSeconds: number | null;
}

/** A pending upload of a batch input file; throws UploadSizeRefused for an empty or too large one. */
export async function createUpload(deps: Pick<UploadDeps, 'meta' | 'clock' | 'limits'>, request: NewUpload): Promise<UploadRecord> {
  const limit = Math.min(deps.limits.maxFileBytes, MAX_UPLOAD_BYTES);
  if (request.bytes === 0 || request.bytes > limit) throw new UploadSizeRefused(request.bytes, limit);
  const now = deps.clock.now();
  const upload: UploadRecord = {
    id: newUploadId(),
    project: request.project,
    filename: request.filename,
    purpose: 'batch',
    bytes: request.bytes,
    mimeType: request.mimeType,
    status: 'pending',
    createdAtMs: now,
    expiresAtMs: now + UPLOAD_LIFETIME_MS,
    fileExpiresAfterSeconds: request.fileExpiresAfterSeconds,
    fileId: null,
  };
  await deps.meta.createUpload(upload);
  return upload;
}

/** The upload cancelled (again is harmless) and its parts deleted; throws UploadNotPending once it is completed or expired. */
export async function cancelUpload(deps: Pick<UploadDeps, 'meta' | 'blobs' | 'clock'>, found: UploadRecord): Promise<UploadRecord> {
  const upload = await expireIfDue(deps, found);
  if (upload.status === 'cancelled') return upload;
  if (upload.status !== 'pending') throw new UploadNotPending(upload, 'it cannot be cancelled');
  return finishPending(deps, upload, { status: 'cancelled' }, (current = upload) => {
    if (current.status === 'cancelled') return current;
    throw new UploadNotPending(current, 'it cannot be cancelled');
  });
}
