// Adding a part: its bytes stream to the BlobStore and through the part scan (the summary complete
// checks the file from), within what the upload may still hold. Parts sent in parallel each fit
// alone; one conditional count decides which fit together. A refused part stores nothing and
// leaves the upload as it was.
import type { UploadPartRecord, UploadRecord } from '../batch/model.js';
import { newUploadPartId } from '../ids.js';
import { PartScan } from '../input/upload-check.js';
import { UploadNotPending, UploadOverAnnounced, UploadPartEmpty, UploadPartTooLarge } from './errors.js';
import { checkLimits, expireIfDue, MAX_PART_BYTES, type UploadDeps, uploadKeys } from './model.js';

/** What the caller received of a part: its bytes, and whether it was cut at `maxBytes`. */
export interface ReceivedPart {
  bytes: number;
  truncated: boolean;
}

/**
 * Receives a part of the bytes `receive` reads from the client: it stores at most `maxBytes` of them
 * with `store`, and tells how many it read. Throws UploadNotPending, UploadOverAnnounced,
 * UploadPartTooLarge or UploadPartEmpty (or what `receive` throws), having stored nothing.
 */
export async function addUploadPart(
  deps: Pick<UploadDeps, 'meta' | 'blobs' | 'clock' | 'limits'>,
  found: UploadRecord,
  receive: (maxBytes: number, store: (body: AsyncIterable<Uint8Array>) => Promise<{ bytes: number }>) => Promise<ReceivedPart>,
): Promise<UploadPartRecord> {
  const { meta, blobs, clock } = deps;
  let upload = await expireIfDue(deps, found);
  if (upload.status !== 'pending') throw new UploadNotPending(upload, 'parts can no longer be added');
  // The parts together may hold what the upload announced, and never more than a file may be.
  const limit = Math.min(upload.bytes, deps.limits.maxFileBytes);
  const room = limit - (upload.partBytes ?? 0);
  if (room <= 0) throw new UploadOverAnnounced(upload, limit);
  const cap = Math.min(MAX_PART_BYTES, room);
  const partId = newUploadPartId();
  const blobKey = uploadKeys.part(upload.id, partId);
  const scan = new PartScan(checkLimits(deps.limits));
  async function* scanned(body: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    for await (const chunk of body) {
      scan.push(chunk);
      yield chunk;
    }
  }
  let counted = 0;
  try {
    const received = await receive(cap, (body) => blobs.put(blobKey, scanned(body)));
    if (received.truncated) {
      if (cap < MAX_PART_BYTES) throw new UploadOverAnnounced(upload, limit);
      throw new UploadPartTooLarge(MAX_PART_BYTES);
    }
    if (received.bytes === 0) throw new UploadPartEmpty();
    // It may have been completed, cancelled or expired while the part streamed in.
    upload = await expireIfDue(deps, (await meta.getUpload(upload.project, upload.id)) ?? upload);
    if (upload.status !== 'pending') throw new UploadNotPending(upload, 'parts can no longer be added');
    const fitted = await meta.addUploadPartBytes(upload.id, received.bytes, limit);
    if (!fitted) {
      const current = (await meta.getUpload(upload.project, upload.id)) ?? upload;
      if (current.status !== 'pending') throw new UploadNotPending(current, 'parts can no longer be added');
      throw new UploadOverAnnounced(current, limit);
    }
    counted = received.bytes;
    const part: UploadPartRecord = {
      id: partId,
      uploadId: upload.id,
      project: upload.project,
      bytes: received.bytes,
      createdAtMs: clock.now(),
      blobKey,
      summary: scan.end(),
    };
    await meta.putUploadPart(part);
    return part;
  } catch (error) {
    await blobs.delete([blobKey]).catch(() => undefined);
    if (counted > 0) await meta.addUploadPartBytes(upload.id, -counted, limit).catch(() => undefined);
    throw error;
  }
}
