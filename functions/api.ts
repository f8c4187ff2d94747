// The API Lambda: the same Hono app as `npm start` (shared/api/app.ts), behind API Gateway's HTTP
// API (payload format 2.0) through hono/aws-lambda. In AWS, keys are looked up hashed in the
// table (created with `npm run keys`), and downloads too large for a Lambda answer (6 MB, base64)
// answer 307 to a short-lived presigned S3 URL. A route still running at API_ROUTE_DEADLINE (25 s,
// before the gateway's 30 s) answers 503; an upload's complete hands its join over to an
// asynchronous invocation of this function (an ApiHandOffEvent), which finishes it.
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2, Context } from 'aws-lambda';
import { handle } from 'hono/aws-lambda';
import { createApiApp } from '../shared/api/app.js';
import { runHandedOffComplete } from '../shared/uploads/complete.js';
import { API_TIMEOUT_SECONDS, type ApiHandOffEvent } from './contract.js';
import { lambdaHandler, MetricUnit, metrics } from './observability.js';
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

function apiDeps(rt: Runtime) {
  return rt.domain.api(rt.lifecycle, {
    // API_KEYS still works (e.g. a break-glass key); otherwise every key is looked up in the table.
    apiKeys: rt.config.apiKeys,
    resolveApiKey: rt.api.resolveApiKey,
    downloads: rt.api.downloads,
    prices: rt.api.prices,
    // A complete's claim on an upload lasts as long as this function can run.
    completeLeaseMs: API_TIMEOUT_SECONDS * 1000,
    handOffComplete: rt.api.handOff && ((job) => rt.api.handOff!.handOffComplete(job)),
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
