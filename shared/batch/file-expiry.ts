// Files expire (expires_after, 30 days by default), but never from under a batch that reads them:
// a batch's pin on its input (create.ts) keeps the file's record, and with it the bytes, until the
// batch's latest possible end, even past the file's own expiry (the API no longer shows it then).
// The bytes go when the record does:
//   - AWS: DynamoDB's TTL removes the record; the file reaper (functions/file-reaper.ts, on the
//     table's stream) deletes the object, or puts the record back if a batch that has not ended
//     still pins it (a batch that outran its pin's TTL). The S3 lifecycle rule on files/ is only a
//     backstop, longer than any file's retention and window together.
//   - Locally: the file sweep deletes expired files no batch pins (dynalite has no TTL).
import { errorMessage, type Logger } from '../log.js';
import type { BlobStore, Clock, MetaStore, RemovedFile } from '../ports.js';
import { type BatchRecord, TERMINAL_STATUSES } from './model.js';

/** After its window ends a batch drains (an upstream timeout) and finalizes (minutes): a day covers both. */
export const PIN_MARGIN_MS = 24 * 3_600_000;

/** Until when a batch's pin keeps its input: the latest the batch can end. */
export const pinKeepUntilMs = (batch: Pick<BatchRecord, 'expiresAtMs'>): number => batch.expiresAtMs + PIN_MARGIN_MS;

export interface FileExpiryDeps {
  meta: MetaStore;
  blobs: BlobStore;
  clock: Pick<Clock, 'now'>;
  log: Logger;
}

/** `npm start`: deletes the files past their expiry that no batch pins (bytes first, then the record). */
export async function sweepExpiredFiles(deps: FileExpiryDeps, limit = 1_000): Promise<number> {
  const now = deps.clock.now();
  let deleted = 0;
  for (const file of await deps.meta.listExpiredFiles(now, limit)) {
    try {
      // No batch can pin an expired file, so none takes these bytes up between the listing and here.
      await deps.blobs.delete([file.blobKey]);
      if (await deps.meta.deleteExpiredFile(file.id, now)) deleted += 1;
    } catch (error) {
      deps.log.log('warn', 'an expired file could not be deleted; the next sweep tries again', {
        fileId: file.id,
        error: errorMessage(error),
      });
    }
  }
  return deleted;
}

/**
 * AWS: the TTL removed a file's record. Its bytes go, unless a batch that has not ended still pins
 * it: then the record is put back, kept until that batch's latest end.
 */
export async function reapRemovedFile(deps: FileExpiryDeps, removed: RemovedFile): Promise<'deleted' | 'restored'> {
  const pinning = (await Promise.all(removed.pinnedBy.map((id) => deps.meta.getBatch(id)))).filter(
    (batch): batch is BatchRecord => batch !== undefined && !TERMINAL_STATUSES.includes(batch.status),
  );
  if (pinning.length > 0) {
    const keepUntil = Math.max(deps.clock.now() + PIN_MARGIN_MS, ...pinning.map(pinKeepUntilMs));
    await deps.meta.restoreFile({ ...removed, pinnedBy: pinning.map((batch) => batch.id) }, keepUntil);
    deps.log.log('warn', 'an expired file is still read by a batch: its record is back', {
      fileId: removed.file.id,
      batches: pinning.map((batch) => batch.id),
    });
    return 'restored';
  }
  await deps.blobs.delete([removed.file.blobKey]);
  return 'deleted';
}
