// The start sweep, every 5 minutes (an EventBridge schedule): batches left `validating` without an
// execution (their StartExecution failed after its retries) are started again, or failed once
// START_SWEEP_GIVE_UP_AFTER has passed (shared/batch/start-sweep.ts).
import { type StartSweepResult, sweepUnstartedBatches } from '../shared/batch/start-sweep.js';
import { lambdaHandler, MetricUnit, metrics } from './observability.js';
import { runtime } from './runtime.js';

export const handler = lambdaHandler('start-sweep', async (): Promise<StartSweepResult> => {
  const rt = await runtime();
  const result = await sweepUnstartedBatches({ ...rt.domain.steps, lifecycle: rt.lifecycle }, rt.config.startSweep);
  const m = metrics();
  if (result.started.length > 0) m.addMetric('BatchesStartedBySweep', MetricUnit.Count, result.started.length);
  if (result.failed.length > 0) m.addMetric('BatchesFailedUnstarted', MetricUnit.Count, result.failed.length);
  return result;
});
