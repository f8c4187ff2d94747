// The file reaper, on the table's DynamoDB stream, filtered to the file records DynamoDB's TTL
// removed: deletes each one's object from S3, or, if a batch that has not ended still pins the
// file, puts its record back (shared/batch/file-expiry.ts). Records are taken in order; the first
// that fails and every one after it are reported (ReportBatchItemFailures), so the stream retries
// from there and nothing is skipped.
import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import type { DynamoDBBatchResponse, DynamoDBStreamEvent } from 'aws-lambda';
import { removedFileOf } from '../shared/adapters/aws/dynamo-meta-store.js';
import { reapRemovedFile } from '../shared/batch/file-expiry.js';
import { errorMessage } from '../shared/log.js';
import { TTL_PRINCIPAL } from './contract.js';
import { lambdaHandler, MetricUnit, metrics } from './observability.js';
import { runtime } from './runtime.js';

export const handler = lambdaHandler('file-reaper', async (event: DynamoDBStreamEvent): Promise<DynamoDBBatchResponse> => {
  const rt = await runtime();
  const deps = { meta: rt.meta, blobs: rt.blobs, clock: rt.clock, log: rt.log };
  const counts = { deleted: 0, restored: 0 };
  for (const [index, record] of event.Records.entries()) {
    // The event source's filter passes only these; a record of anything else is left alone.
    if (record.eventName !== 'REMOVE' || record.userIdentity?.principalId !== TTL_PRINCIPAL) continue;
    const removed = removedFileOf(record.dynamodb?.OldImage as Record<string, AttributeValue> | undefined);
    if (!removed) continue;
    try {
      counts[await reapRemovedFile(deps, removed)] += 1;
    } catch (error) {
      rt.log.log('error', 'an expired file could not be reaped; the stream delivers it again', {
        fileId: removed.file.id,
        error: errorMessage(error),
      });
      return {
        batchItemFailures: event.Records.slice(index).map((failed) => ({ itemIdentifier: failed.dynamodb?.SequenceNumber ?? '' })),
      };
    }
  }
  const m = metrics();
  if (counts.deleted > 0) m.addMetric('ExpiredFilesDeleted', MetricUnit.Count, counts.deleted);
  if (counts.restored > 0) m.addMetric('ExpiredFilesKeptForBatches', MetricUnit.Count, counts.restored);
  return { batchItemFailures: [] };
});
