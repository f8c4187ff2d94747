// Status changes on an event bus (EventBridge in AWS), for anything in the team's account to route
// with a rule: one event for every status a batch enters, all of them, not only the final four.
//
//   source       batch-service
//   detail-type  Batch Status Change
//   detail       { id, project, status, previous_status, event_id, request_counts: {total, completed,
//                  failed}, input_file_id, output_file_id, error_file_id, metadata, created_at, changed_at }
import type { BatchRecord } from '../batch/model.js';
import type { BusEvent, EventBus } from '../ports.js';
import type { EventSubscriber } from './dispatcher.js';
import type { BatchEvent } from './model.js';

export const BUS_SOURCE = 'batch-service';
export const BUS_DETAIL_TYPE = 'Batch Status Change';

/** The detail of a status change. Counts and file ids are the batch's as it is when the event goes out. */
export function busDetail(event: BatchEvent, batch: BatchRecord): Record<string, unknown> {
  return {
    id: event.batchId,
    project: event.project,
    status: event.status,
    previous_status: event.previousStatus,
    event_id: event.id,
    request_counts: { total: batch.total, completed: batch.completed, failed: batch.failed },
    input_file_id: batch.inputFileId,
    output_file_id: batch.outputFileId,
    error_file_id: batch.errorFileId,
    metadata: batch.metadata === null ? null : { ...batch.metadata },
    created_at: Math.floor(batch.createdAtMs / 1000),
    changed_at: Math.floor(event.atMs / 1000),
  };
}

export function eventBusSubscriber(bus: EventBus): EventSubscriber {
  return {
    name: 'event-bus',
    async handle(event, batch) {
      const busEvent: BusEvent = { id: event.id, atMs: event.atMs, detail: busDetail(event, batch) };
      await bus.publish([busEvent]);
    },
  };
}
