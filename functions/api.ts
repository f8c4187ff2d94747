// The API Lambda: the same Hono app as `npm start` (shared/api/app.ts), behind API Gateway's HTTP
// API (payload format 2.0) through hono/aws-lambda. In AWS, keys are looked up hashed in the
// table (created with `npm run keys`), and downloads too large for a Lambda answer (6 MB, base64)
// answer 307 to a short-lived presigned S3 URL.
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2, Context } from 'aws-lambda';
import { handle } from 'hono/aws-lambda';
import { createApiApp } from '../shared/api/app.js';
import { API_TIMEOUT_SECONDS } from './contract.js';
import { lambdaHandler, MetricUnit, metrics } from './observability.js';
import { type Runtime, runtime } from './runtime.js';

type ApiHandler = (event: APIGatewayProxyEventV2, context: Context) => Promise<APIGatewayProxyStructuredResultV2>;
/** One app per runtime, that is per cold start. */
const apps = new WeakMap<Runtime, ApiHandler>();

function appOf(rt: Runtime): ApiHandler {
  let app = apps.get(rt);
  if (!app) {
    app = buildApp(rt);
    apps.set(rt, app);
  }
  return app;
}

function buildApp(rt: Runtime): ApiHandler {
  const hono = createApiApp(
    rt.domain.api(rt.lifecycle, {
      // API_KEYS still works (e.g. a break-glass key); otherwise every key is looked up in the table.
      apiKeys: rt.config.apiKeys,
      resolveApiKey: rt.api.resolveApiKey,
      ...(rt.api.signingSecrets ? { signingSecrets: rt.api.signingSecrets } : {}),
      downloads: rt.api.downloads,
      prices: rt.api.prices,
      // A complete's claim on an upload lasts as long as this function can run.
      completeLeaseMs: API_TIMEOUT_SECONDS * 1000,
    }),
  );
  return handle(hono) as unknown as ApiHandler;
}

export const handler = lambdaHandler('api', async (event: APIGatewayProxyEventV2, context: Context) => {
  const result = await appOf(await runtime())(event, context);
  const status = result.statusCode ?? 200;
  const m = metrics();
  m.addMetric('ApiRequests', MetricUnit.Count, 1);
  if (status >= 500) m.addMetric('ApiServerErrors', MetricUnit.Count, 1);
  else if (status >= 400) m.addMetric('ApiClientErrors', MetricUnit.Count, 1);
  return result;
});
