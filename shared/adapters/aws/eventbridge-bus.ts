// The EventBus on EventBridge: PutEvents on the default bus or the stack's own.
import { type EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { BUS_DETAIL_TYPE, BUS_SOURCE } from '../../events/bus.js';
import type { BusEvent, EventBus } from '../../ports.js';

/** PutEvents takes at most 10 entries a call. */
const ENTRIES_PER_CALL = 10;

export class EventBridgeBus implements EventBus {
  constructor(private readonly options: { client: EventBridgeClient; busName: string }) {}

  async publish(events: readonly BusEvent[]): Promise<void> {
    for (let i = 0; i < events.length; i += ENTRIES_PER_CALL) {
      const slice = events.slice(i, i + ENTRIES_PER_CALL);
      const out = await this.options.client.send(
        new PutEventsCommand({
          Entries: slice.map((event) => ({
            EventBusName: this.options.busName,
            Source: BUS_SOURCE,
            DetailType: BUS_DETAIL_TYPE,
            Detail: JSON.stringify(event.detail),
            Time: new Date(event.atMs),
            Resources: [],
          })),
        }),
      );
      // PutEvents answers 200 with per-entry failures: any of them fails the call, and the
      // dispatcher keeps the event for its next drain (consumers tell repeats by detail.event_id).
      if ((out.FailedEntryCount ?? 0) > 0) {
        const failure = out.Entries?.find((entry) => entry.ErrorCode);
        throw new Error(`EventBridge refused ${out.FailedEntryCount} event(s): ${failure?.ErrorCode ?? 'unknown'}`);
      }
    }
  }
}
