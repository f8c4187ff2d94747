// A batch pins its input file from its creation until it is final (MetaStore.pinFile), so a user
// who deletes the file meanwhile does not take the bytes from under the batch's workers.
import type { BlobStore, MetaStore } from '../ports.js';
import { type BatchRecord, TERMINAL_STATUSES } from './model.js';

/**
 * Ends the batch's pin on its input file: called when the batch becomes final (and again, harmlessly,
 * by a step that runs again on a final batch), and when creating it fails. If the user deleted the
 * file meanwhile and no other batch pins it, its blob and then its record go now. A final batch
 * created with autoDeleteInputFile (Zhipu's auto_delete_input_file) deletes the file first, as
 * its user would: another batch that still reads it keeps the bytes until it ends.
 */
export async function releaseInputFile(
  deps: { meta: MetaStore; blobs: BlobStore },
  batch: Pick<BatchRecord, 'id' | 'inputFileId'> & Partial<Pick<BatchRecord, 'project' | 'status' | 'autoDeleteInputFile'>>,
): Promise<void> {
  if (batch.autoDeleteInputFile && batch.project && batch.status && TERMINAL_STATUSES.includes(batch.status)) {
    await deps.meta.deleteFile(batch.project, batch.inputFileId);
  }
  const orphan = await deps.meta.unpinFile(batch.inputFileId, batch.id);
  if (!orphan) return;
  // Blob first: should this stop half-way, the record is still there for the next release to find.
  await deps.blobs.delete([orphan.blobKey]);
  await deps.meta.purgeDeletedFile(orphan.id);
}
