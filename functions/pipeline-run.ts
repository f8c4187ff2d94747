// The pipeline-run function: one run of a pipeline per invocation, from EventBridge Scheduler (a
// scheduled time), an S3 Object Created rule (a new object under the source prefix) or the API (a
// run by hand). The run is the domain's (shared/pipelines/run.ts): a repeat of a trigger (the
// retries of an asynchronous invocation, a rule delivering twice) answers the run that exists.
//
// A run that fails for its source (a bad file, a missing object) is recorded and counted
// (PipelineRunsFailed, alarmed); an invocation that fails for storage throws, is retried, and after
// its retries goes to the pipelines' dead-letter queue (alarmed).
import { formatLocation } from '../shared/pipelines/config.js';
import type { PipelineRunRecord } from '../shared/pipelines/model.js';
import { objectTrigger, scheduledTrigger, startRun, type Trigger, TriggerRefused } from '../shared/pipelines/run.js';
import type { PipelineRunEvent } from './contract.js';
import { domainLogger, lambdaHandler, MetricUnit, metrics } from './observability.js';
import { runtime } from './runtime.js';

export type PipelineRunResult = { run: PipelineRunRecord; duplicate: boolean } | { refused: string };

function triggerOf(event: PipelineRunEvent, serviceBucket: string, sourceBucket: string | undefined): Trigger {
  switch (event.kind) {
    case 'schedule': {
      const atMs = Date.parse(event.scheduledTime);
      if (Number.isNaN(atMs)) throw new TriggerRefused(`scheduledTime '${event.scheduledTime}' is not a time`);
      return scheduledTrigger(atMs);
    }
    case 'object-created': {
      if (event.bucket !== (sourceBucket ?? serviceBucket)) throw new TriggerRefused(`bucket ${event.bucket} is not the pipeline's source`);
      const atMs = Date.parse(event.time);
      return objectTrigger(event.key, event.etag, Number.isNaN(atMs) ? Date.now() : atMs);
    }
    case 'manual':
      // The API made the trigger (shared/api/pipelines.ts); a repeat of its request names the same one.
      return {
        kind: 'manual',
        key: event.trigger.key,
        atMs: event.trigger.atMs,
        ...(event.trigger.objectKey === undefined ? {} : { objectKey: event.trigger.objectKey }),
      };
  }
}

export const handler = lambdaHandler('pipeline-run', async (event: PipelineRunEvent): Promise<PipelineRunResult> => {
  const rt = await runtime();
  const log = domainLogger();
  const pipeline = rt.pipelines.definitions.find((p) => p.name === event.pipeline);
  // A schedule or rule left over from an older configuration: throwing sends it to the dead-letter queue.
  if (!pipeline) throw new Error(`no pipeline named '${event.pipeline}' in PIPELINES_CONFIG`);
  const m = metrics();
  try {
    const { run, duplicate } = await startRun(rt.pipelines.deps, pipeline, triggerOf(event, rt.pipelines.bucket, pipeline.source.bucket));
    if (!duplicate) m.addMetric('PipelineRuns', MetricUnit.Count, 1);
    if (!duplicate && run.status === 'failed') m.addMetric('PipelineRunsFailed', MetricUnit.Count, 1);
    return { run, duplicate };
  } catch (error) {
    if (!(error instanceof TriggerRefused)) throw error;
    log.log('warn', 'pipeline trigger refused', { pipeline: pipeline.name, source: formatLocation(pipeline.source), error: error.message });
    return { refused: error.message };
  }
});
