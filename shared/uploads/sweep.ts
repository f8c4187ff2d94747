// Deletes the stored parts of uploads that will never be completed: expired, cancelled, or
// completed with their parts still there (a crash between the join and the delete), and parts whose
// record was never written (a crash between storing a part and recording it). In AWS an S3
// lifecycle rule does it for the `uploads/` prefix; `npm start` runs this at start-up and then
// periodically, so no tenant can fill the disk with parts it never completes.
//
// What a sweep costs: one listing of the `uploads/` prefix (a directory walk locally), then for
// each upload found there one read of a part record (whose project names the upload's owner) and
// one of the upload; an upload that is due is marked expired (one write) and its parts deleted.
// Only pending uploads keep parts between sweeps, and those live for an hour, so a sweep reads
// about two records per upload of the last hour. At start-up it also reads the record of each part
// of a live upload, to delete the objects a crash left without one.

import type { UploadRecord } from '../batch/model.js';
import { errorMessage, type Logger } from '../log.js';
import type { BlobStore, Clock, MetaStore } from '../ports.js';
import { leavePending, UploadStatusConflict, uploadKeys } from './model.js';

export interface UploadSweepDeps {
  meta: Pick<MetaStore, 'getUpload' | 'getUploadPart' | 'updateUpload'>;
  blobs: Pick<BlobStore, 'list' | 'delete'>;
  clock: Pick<Clock, 'now'>;
  log: Logger;
}

export interface SweepResult {
  /** Uploads whose parts were deleted. */
  uploads: number;
  /** Part objects deleted. */
  parts: number;
}

const UPLOADS_PREFIX = 'uploads/';

/**
 * Sweeps the parts of uploads. A part object without a record may be one a request is storing right
 * now (its record follows the object): such a part is deleted only when the sweeper's previous sweep
 * saw it without a record too, or when `listedBeforeServing` says no request can be storing one.
 */
export function uploadSweeper(deps: UploadSweepDeps) {
  const { meta, blobs, clock } = deps;
  /** Part objects of no recorded upload at the previous sweep. */
  let unrecorded = new Set<string>();

  /** The upload these part objects belong to, found through the first of them that has a record. */
  async function uploadOf(uploadId: string, keys: string[]): Promise<UploadRecord | undefined> {
    for (const key of keys) {
      const part = await meta.getUploadPart(uploadId, key.slice(uploadKeys.parts(uploadId).length));
      if (part) return meta.getUpload(part.project, uploadId);
    }
    return undefined;
  }

  /** The part objects of this upload that no part record names. */
  async function unrecordedParts(uploadId: string, keys: string[]): Promise<string[]> {
    const prefix = uploadKeys.parts(uploadId).length;
    const recorded = await Promise.all(keys.map((key) => meta.getUploadPart(uploadId, key.slice(prefix))));
    return keys.filter((_, i) => !recorded[i]);
  }

  /** Whether the parts of this upload may all go: it will never be completed. */
  async function finished(upload: UploadRecord): Promise<boolean> {
    if (upload.status !== 'pending') return true;
    if (clock.now() < upload.expiresAtMs) return false;
    // Expired untouched: recorded as the routes would, unless a complete got there first.
    try {
      await leavePending(meta, upload, { status: 'expired' });
      return true;
    } catch (error) {
      if (!(error instanceof UploadStatusConflict)) throw error;
      return error.current !== undefined && error.current.status !== 'pending';
    }
  }

  return {
    async sweep(options: { listedBeforeServing?: boolean } = {}): Promise<SweepResult> {
      const byUpload = new Map<string, string[]>();
      for (const key of await blobs.list(UPLOADS_PREFIX)) {
        const uploadId = key.slice(UPLOADS_PREFIX.length).split('/')[0]!;
        byUpload.set(uploadId, [...(byUpload.get(uploadId) ?? []), key]);
      }
      const previous = unrecorded;
      unrecorded = new Set();
      const result: SweepResult = { uploads: 0, parts: 0 };
      for (const [uploadId, keys] of byUpload) {
        try {
          const upload = await uploadOf(uploadId, keys);
          let doomed: string[];
          if (upload) {
            if (await finished(upload)) doomed = keys;
            // A live upload keeps its parts; at start-up, those no record names are a crash's leftovers.
            else doomed = options.listedBeforeServing ? await unrecordedParts(uploadId, keys) : [];
          } else {
            doomed = keys.filter((key) => options.listedBeforeServing || previous.has(key));
            for (const key of keys) if (!doomed.includes(key)) unrecorded.add(key);
          }
          if (doomed.length === 0) continue;
          await blobs.delete(doomed);
          result.uploads++;
          result.parts += doomed.length;
        } catch (error) {
          deps.log.log('warn', 'upload sweep skipped an upload', { uploadId, error: errorMessage(error) });
        }
      }
      if (result.parts > 0) deps.log.log('info', 'upload parts swept', { ...result });
      return result;
    },
  };
}

export type UploadSweeper = ReturnType<typeof uploadSweeper>;
