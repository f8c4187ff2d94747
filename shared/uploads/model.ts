// The Uploads domain (OpenAI's Uploads API): a large file sent in parts, each stored as an object
// under `uploads/<id>/`, joined in the order the client names on complete into the same File
// object /v1/files makes. This module holds what every step of an upload shares: its limits, where
// its parts live, its status as a client sees it, and the one compare-and-set on its status.
//
//   create ──> pending ──complete──> completed (with a File)
//                 │ └──cancel──> cancelled
//                 └──an hour passes──> expired
//
// Parts are accepted only while the upload is pending; an expired, cancelled or completed upload's
// parts are deleted (at once, or by the sweep after a crash).

import type { UploadRecord } from '../batch/model.js';
import { derivedId } from '../ids.js';
import type { UploadCheckLimits } from '../input/upload-check.js';
import { type BlobStore, type Clock, type MetaStore, StatusConflict } from '../ports.js';

/** An upload takes parts for an hour after its creation. */
export const UPLOAD_LIFETIME_MS = 3_600_000;
/** The most bytes one part may carry (OpenAI's limit). */
export const MAX_PART_BYTES = 64 * 1024 * 1024;
/** The most bytes an upload may announce (OpenAI's limit; MAX_FILE_BYTES applies as well). */
export const MAX_UPLOAD_BYTES = 8 * 1024 * 1024 * 1024;
/** Locally no gateway cuts a request short; a claim lasts long enough for the largest join. */
export const DEFAULT_COMPLETE_LEASE_MS = 5 * 60_000;
export const DEFAULT_COMPLETE_WAIT_MS = 20_000;

export const uploadKeys = {
  parts: (uploadId: string) => `uploads/${uploadId}/`,
  part: (uploadId: string, partId: string) => `uploads/${uploadId}/${partId}`,
};

export interface UploadLimits {
  maxFileBytes: number;
  maxLineBytes?: number;
  maxRequestsPerBatch?: number;
}

/** What the Uploads domain needs of the MetaStore: its uploads and parts, and the File it makes. */
export type UploadMeta = Pick<
  MetaStore,
  | 'createUpload'
  | 'getUpload'
  | 'updateUpload'
  | 'claimUploadCompletion'
  | 'releaseUploadCompletion'
  | 'addUploadPartBytes'
  | 'putUploadPart'
  | 'getUploadPart'
  | 'putFile'
  | 'getFile'
  | 'deleteFile'
>;

export interface UploadDeps {
  meta: UploadMeta;
  blobs: BlobStore;
  clock: Clock;
  limits: UploadLimits;
  /**
   * How long a complete may hold its claim on an upload while it joins the parts: at least as long
   * as one request can run (in AWS, the API Lambda's timeout), so that a claim runs out only once
   * its claimant is surely gone. Default DEFAULT_COMPLETE_LEASE_MS.
   */
  completeLeaseMs?: number;
  /**
   * How long a complete waits for another complete's join before giving up (UploadStillCompleting):
   * well under API Gateway's 30 s, so the client gets that answer rather than the gateway's.
   * Default DEFAULT_COMPLETE_WAIT_MS.
   */
  completeWaitMs?: number;
  /**
   * Runs a complete elsewhere, with a request's whole time ahead of it (in AWS, an asynchronous
   * invocation of the API function): a complete whose request reaches its deadline mid-join hands
   * its join over here. Unset: the join goes on in this process (npm start).
   */
  handOffComplete?: (job: CompleteHandOff) => Promise<void>;
}

/** A complete handed over to run elsewhere: what identifies the upload and the request. */
export interface CompleteHandOff {
  project: string;
  uploadId: string;
  partIds: string[];
  md5?: string;
}

/** The batch file checks under these limits (unset: not checked). */
export function checkLimits(limits: UploadLimits): UploadCheckLimits {
  return {
    maxLineBytes: limits.maxLineBytes ?? Number.POSITIVE_INFINITY,
    maxRequests: limits.maxRequestsPerBatch ?? Number.POSITIVE_INFINITY,
  };
}

/** The status a client sees: a pending upload past its hour is expired, recorded so or not. */
export function effectiveStatus(upload: UploadRecord, nowMs: number): UploadRecord['status'] {
  return upload.status === 'pending' && nowMs >= upload.expiresAtMs ? 'expired' : upload.status;
}

/** The file id of an upload's File: the same on every try, so a repeated complete makes one file. */
export function uploadFileId(uploadId: string): string {
  return derivedId('file-', `upload:${uploadId}`);
}

/** A compare-and-set on an upload's status lost: it is no longer pending. */
export class UploadStatusConflict extends StatusConflict<UploadRecord> {
  constructor(
    readonly uploadId: string,
    current: UploadRecord | undefined,
  ) {
    super('upload', uploadId, current);
  }
}

/** Moves a pending upload on; throws UploadStatusConflict, with the upload as it is, when it is no longer pending. */
export async function leavePending(
  meta: Pick<MetaStore, 'updateUpload' | 'getUpload'>,
  upload: UploadRecord,
  changes: { status: 'completed'; fileId: string } | { status: 'cancelled' | 'expired' },
): Promise<UploadRecord> {
  const changed = await meta.updateUpload(upload.id, ['pending'], changes);
  if (changed) return changed;
  throw new UploadStatusConflict(upload.id, await meta.getUpload(upload.project, upload.id));
}

/** Deletes the stored parts of an upload (what is left is the sweep's). */
export async function deleteParts(blobs: Pick<BlobStore, 'list' | 'delete'>, uploadId: string): Promise<void> {
  await blobs.delete(await blobs.list(uploadKeys.parts(uploadId))).catch(() => undefined);
}

type Stores = { meta: Pick<MetaStore, 'updateUpload' | 'getUpload'>; blobs: Pick<BlobStore, 'list' | 'delete'> };

/**
 * The upload leaves pending for good and its parts go. When another change got there first, answers
 * what `lost` makes of the upload as it is now (undefined: gone), which may be to throw a refusal.
 */
export async function finishPending(
  deps: Stores,
  upload: UploadRecord,
  changes: Parameters<typeof leavePending>[2],
  lost: (current: UploadRecord | undefined) => UploadRecord | Promise<UploadRecord>,
): Promise<UploadRecord> {
  let finished: UploadRecord;
  try {
    finished = await leavePending(deps.meta, upload, changes);
  } catch (error) {
    if (error instanceof UploadStatusConflict) return lost(error.current);
    throw error;
  }
  await deleteParts(deps.blobs, upload.id);
  return finished;
}

/** The upload as it is now: a pending upload that has outlived its hour is recorded as expired, and its parts go. */
export async function expireIfDue(deps: Stores & { clock: Pick<Clock, 'now'> }, upload: UploadRecord): Promise<UploadRecord> {
  if (effectiveStatus(upload, deps.clock.now()) !== 'expired' || upload.status === 'expired') return upload;
  return finishPending(deps, upload, { status: 'expired' }, (current) => current ?? upload);
}
