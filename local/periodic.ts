// npm start's background sweeps: a task run every interval, never two runs at once, a failure
// logged (the next interval tries again), and stop() waits for a run in progress.
import { errorMessage, type Logger } from '../shared/log.js';

export function startPeriodic(name: string, task: () => Promise<unknown>, intervalMs: number, log: Logger) {
  let running: Promise<unknown> | undefined;
  const run = () => {
    running ??= task()
      .catch((error: unknown) => log.log('warn', `${name} failed`, { error: errorMessage(error) }))
      .finally(() => {
        running = undefined;
      });
  };
  const timer = setInterval(run, intervalMs);
  timer.unref();
  return {
    /** Starts a run now, unless one is in progress. */
    run,
    async stop(): Promise<void> {
      clearInterval(timer);
      await running;
    },
  };
}
