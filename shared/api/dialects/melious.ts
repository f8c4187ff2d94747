// Melious (seed melious-batch-workflow.txt), at /melious/v1: `succeeded` where OpenAI says
// `completed`; request_counts without `total`, whose values add up to it (the seed's script sums
// them); one output file holding every row once the batch is final (shared/batch/one-file.ts), so
// `error_file_id` stays null. Model names may carry the `:batch` flavor suffix (the router resolves it).
import type { BatchRecord } from '../../batch/model.js';
import { BATCH_ENDPOINTS } from '../../batch/rules.js';
import { toBatchObject } from '../objects.js';
import type { Dialect, WireBatch } from './dialect.js';

export function meliousBatchObject(batch: BatchRecord): WireBatch {
  const object = toBatchObject(batch);
  const pending = Math.max(0, batch.total - batch.completed - batch.failed);
  return {
    ...object,
    status: batch.status === 'completed' ? 'succeeded' : batch.status,
    request_counts: { succeeded: batch.completed, failed: batch.failed, pending },
  };
}

export const meliousDialect: Dialect = {
  name: 'melious',
  basePaths: ['/melious/v1'],
  endpoints: BATCH_ENDPOINTS,
  batchObject: meliousBatchObject,
  createOptions: () => ({ dialect: 'melious' }),
  listFilter: () => undefined,
};
