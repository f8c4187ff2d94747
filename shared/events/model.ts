// Status-change events: one for every status a batch enters, in order, each exactly once in the
// outbox. The outbox is the batch item itself (MetaStore.transitionBatch appends the event in the
// same conditional write that changes the status), so no status change can happen without its
// event, and no event can exist for a change that did not happen. Subscribers (webhook endpoints,
// EventBridge, pipeline destinations) receive them at least once, in order per batch, and tell
// repeats apart by the event's id.

import type { BatchStatus } from '../batch/model.js';
import { derivedId } from '../ids.js';

/** The event types, as OpenAI names its batch webhook events (`batch.completed`, ...), one per status. */
export const BATCH_EVENT_TYPES = [
  'batch.created',
  'batch.in_progress',
  'batch.finalizing',
  'batch.completed',
  'batch.failed',
  'batch.expired',
  'batch.cancelling',
  'batch.cancelled',
] as const;
export type BatchEventType = (typeof BATCH_EVENT_TYPES)[number];

export interface BatchEvent {
  /** `evt_` and 24 characters, the same whenever the same batch enters the same status. */
  id: string;
  type: BatchEventType;
  batchId: string;
  project: string;
  status: BatchStatus;
  /** null for `batch.created`. */
  previousStatus: BatchStatus | null;
  atMs: number;
}

export function eventTypeOf(status: BatchStatus): BatchEventType {
  return status === 'validating' ? 'batch.created' : `batch.${status}`;
}

/** A batch enters each status at most once (the transitions table has no cycle), so this id is unique. */
export function batchEventId(batchId: string, status: BatchStatus): string {
  return derivedId('evt_', `event:${batchId}:${status}`);
}

export function batchEvent(
  batch: { id: string; project: string },
  status: BatchStatus,
  previousStatus: BatchStatus | null,
  atMs: number,
): BatchEvent {
  return {
    id: batchEventId(batch.id, status),
    type: eventTypeOf(status),
    batchId: batch.id,
    project: batch.project,
    status,
    previousStatus,
    atMs,
  };
}
