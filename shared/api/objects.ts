// Records → the OpenAI wire objects. Every field the spec names is present; unset ones are null.
import type { BatchRecord, FileRecord } from '../batch/model.js';
import type { BatchEstimate } from '../schedule/eta.js';

const seconds = (ms: number | null) => (ms === null ? null : Math.floor(ms / 1000));

export function toFileObject(file: FileRecord) {
  return {
    id: file.id,
    object: 'file' as const,
    bytes: file.bytes,
    created_at: seconds(file.createdAtMs)!,
    expires_at: seconds(file.expiresAtMs),
    filename: file.filename,
    purpose: file.purpose,
    status: 'processed' as const,
    status_details: null,
  };
}

/** A batch as the API shows it: its record, and while it runs the schedule's estimate (shared/schedule/eta.ts). */
export type BatchView = BatchRecord & { estimate?: BatchEstimate };

export function toBatchObject(batch: BatchView) {
  return {
    id: batch.id,
    object: 'batch' as const,
    endpoint: batch.endpoint,
    model: batch.model,
    errors: batch.errors ? { object: 'list' as const, data: batch.errors } : null,
    input_file_id: batch.inputFileId,
    completion_window: batch.completionWindow,
    status: batch.status,
    output_file_id: batch.outputFileId,
    error_file_id: batch.errorFileId,
    created_at: seconds(batch.createdAtMs)!,
    in_progress_at: seconds(batch.inProgressAtMs),
    expires_at: seconds(batch.expiresAtMs),
    finalizing_at: seconds(batch.finalizingAtMs),
    completed_at: seconds(batch.completedAtMs),
    failed_at: seconds(batch.failedAtMs),
    expired_at: seconds(batch.expiredAtMs),
    cancelling_at: seconds(batch.cancellingAtMs),
    cancelled_at: seconds(batch.cancelledAtMs),
    request_counts: { total: batch.total, completed: batch.completed, failed: batch.failed },
    usage: {
      input_tokens: batch.usage.inputTokens,
      input_tokens_details: { cached_tokens: batch.usage.cachedTokens },
      output_tokens: batch.usage.outputTokens,
      output_tokens_details: { reasoning_tokens: batch.usage.reasoningTokens },
      total_tokens: batch.usage.totalTokens,
    },
    metadata: batch.metadata,
    // Extension fields (x_): only on batches that have them, so every other Batch object is OpenAI's shape exactly.
    ...(batch.retryOf ? { x_retry_of: batch.retryOf } : {}),
    ...(batch.retriedBy ? { x_retried_by: batch.retriedBy } : {}),
    ...(batch.priority ? { x_priority: batch.priority } : {}),
    ...(batch.estimate?.completionAtMs !== undefined ? { x_estimated_completion_at: seconds(batch.estimate.completionAtMs) } : {}),
    ...(batch.estimate?.reason ? { x_status_reason: batch.estimate.reason } : {}),
  };
}

export function listObject<T extends { id: string }>(items: T[], hasMore: boolean) {
  return {
    object: 'list' as const,
    data: items,
    first_id: items[0]?.id ?? null,
    last_id: items.at(-1)?.id ?? null,
    has_more: hasMore,
  };
}
