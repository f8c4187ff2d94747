// The API Lambda: the same Hono app as `npm start` (shared/api/app.ts), behind API Gateway's HTTP
// API (payload format 2.0) through hono/aws-lambda. In AWS, keys are looked up hashed in the
// table (created with `npm run keys`), and downloads too large for a Lambda answer (6 MB, base64)
// answer 307 to a short-lived presigned S3 URL. A route still running at API_ROUTE_DEADLINE (25 s,
// before the gateway's 30 s) answers 503; an upload's complete hands its join over to an
// asynchronous invocation of this function (an ApiHandOffEvent), which finishes it.
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2, Context } from 'aws-lambda';
import { handle } from 'hono/aws-lambda';
import { createApiApp } from '../shared/api/app.js';
import type { PipelineDefinition } from '../shared/pipelines/config.js';
import { type RunOutcome, type Trigger, TriggerRefused } from '../shared/pipelines/run.js';
import { runHandedOffComplete } from '../shared/uploads/complete.js';
import { API_TIMEOUT_SECONDS, type ApiHandOffEvent, type PipelineRunEvent } from './contract.js';
import { lambdaHandler, MetricUnit, metrics } from './observability.js';
import type { PipelineRunResult } from './pipeline-run.js';
import { type Runtime, runtime } from './runtime.js';

type ApiHandler = (event: APIGatewayProxyEventV2, context: Context) => Promise<APIGatewayProxyStructuredResultV2>;
/** One app per runtime, that is per cold start. */
const apps = new WeakMap<Runtime, { handle: ApiHandler; deps: ReturnType<typeof apiDeps> }>();

function appOf(rt: Runtime) {
  let app = apps.get(rt);
  if (!app) {
    const deps = apiDeps(rt);
    app = { handle: handle(createApiApp(deps)) as unknown as ApiHandler, deps };
    apps.set(rt, app);
  }
  return app;
}

let lambda: LambdaClient | undefined;

/**
 * A run by hand: the pipeline-run function runs it (it alone may read the sources), invoked and
 * waited for. A run that outlasts API Gateway's 30 s still finishes; the client's retry with the
 * same Idempotency-Key then answers it.
 */
async function startByHand(rt: Runtime, pipeline: PipelineDefinition, trigger: Trigger): Promise<RunOutcome> {
  const functionName = rt.pipelines.runFunction;
  if (!functionName) throw new Error('PIPELINE_RUN_FUNCTION is not set: this stack has no pipeline-run function');
  lambda ??= new LambdaClient({});
  const event: PipelineRunEvent = {
    kind: 'manual',
    pipeline: pipeline.name,
    trigger: { key: trigger.key, atMs: trigger.atMs, ...(trigger.objectKey === undefined ? {} : { objectKey: trigger.objectKey }) },
  };
  const out = await lambda.send(new InvokeCommand({ FunctionName: functionName, Payload: Buffer.from(JSON.stringify(event)) }));
  const text = Buffer.from(out.Payload ?? new Uint8Array()).toString('utf8');
  if (out.FunctionError) throw new Error(`the pipeline-run function failed: ${text.slice(0, 500)}`);
  const result = JSON.parse(text) as PipelineRunResult;
  if ('refused' in result) throw new TriggerRefused(result.refused);
  return result;
}

function apiDeps(rt: Runtime) {
  return rt.domain.api(rt.lifecycle, {
    // API_KEYS still works (e.g. a break-glass key); otherwise every key is looked up in the table.
    apiKeys: rt.config.apiKeys,
    resolveApiKey: rt.api.resolveApiKey,
    ...(rt.api.signingSecrets ? { signingSecrets: rt.api.signingSecrets } : {}),
    downloads: rt.api.downloads,
    prices: rt.api.prices,
    // A complete's claim on an upload lasts as long as this function can run.
    completeLeaseMs: API_TIMEOUT_SECONDS * 1000,
    handOffComplete: rt.api.handOff && ((job) => rt.api.handOff!.handOffComplete(job)),
    pipelines: {
      definitions: rt.pipelines.definitions,
      runs: rt.pipelines.runs,
      start: (pipeline, trigger) => startByHand(rt, pipeline, trigger),
    },
  });
}

const isHandOff = (event: APIGatewayProxyEventV2 | ApiHandOffEvent): event is ApiHandOffEvent =>
  (event as ApiHandOffEvent).handOff === 'upload-complete';

export const handler = lambdaHandler('api', async (event: APIGatewayProxyEventV2 | ApiHandOffEvent, context: Context) => {
  const rt = await runtime();
  const app = appOf(rt);
  if (isHandOff(event)) {
    await runHandedOffComplete(app.deps, event.job);
    return { statusCode: 204 } satisfies APIGatewayProxyStructuredResultV2;
  }
  const result = await app.handle(event, context);
  const status = result.statusCode ?? 200;
  const m = metrics();
  m.addMetric('ApiRequests', MetricUnit.Count, 1);
  if (status >= 500) m.addMetric('ApiServerErrors', MetricUnit.Count, 1);
  else if (status >= 400) m.addMetric('ApiClientErrors', MetricUnit.Count, 1);
  return result;
});
