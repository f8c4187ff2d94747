// The embedded WorkQueue of `npm start`, under the WorkQueue contract.
import { LocalWorkQueue } from '../../shared/adapters/local/local-work-queue.js';
import type { ChunkMessage } from '../../shared/ports.js';
import { workQueueContract } from './work-queue-contract.js';

workQueueContract('LocalWorkQueue', async () => {
  const parked: ChunkMessage[] = [];
  const queue = new LocalWorkQueue({ concurrency: 4, maxReceives: 3, redeliveryDelayMs: 20, onDeadLetter: (m) => parked.push(m) });
  return {
    queue,
    consume: (handler) => queue.start(handler),
    deadLetters: async () => parked.splice(0),
    maxReceives: 3,
    close: () => queue.stop(),
  };
});
