import type { Logger } from '../log.js';
import type { Clock } from '../ports.js';
import { withoutFlavor } from './flavor.js';
import { HttpUpstream } from './http-upstream.js';
import { keyRedactor, type Redactor } from './redact.js';
import { type ResolvedRoute, routeSelector } from './routes.js';
import { TEST_MODEL, testModelUpstream } from './test-model.js';
import type { Upstream, UpstreamRouter } from './types.js';

export interface DefaultRouteConfig {
  /** The default route (UPSTREAM_BASE_URL): serves every model no other route matches. */
  baseUrl: string | undefined;
  apiKey: string | undefined;
  /** The default route's maxConcurrency, and the one of routes that give none. */
  concurrency: number;
  timeoutMs: number;
  maxAttempts: number;
  baseBackoffMs: number;
  requestsPerMinute?: number;
  tokensPerMinute?: number;
  /** Routes by model name or pattern (UPSTREAM_ROUTES), their keys already resolved. */
  routes?: readonly ResolvedRoute[];
  /** Adapt each route's concurrency to its upstream (default true). */
  adaptive?: boolean;
  /** The most bytes of one answer that are read (MAX_RESPONSE_BYTES). */
  maxResponseBytes?: number;
}

/** The redactor of every key these routes send (the default route's and each route's). */
export function upstreamKeyRedactor(config: Pick<DefaultRouteConfig, 'apiKey' | 'routes'>): Redactor {
  return keyRedactor([config.apiKey, ...(config.routes ?? []).map((route) => route.apiKey)]);
}

/**
 * `batch-test-model` is answered in-process; every other model goes to its route, else to the
 * default upstream when one is configured. Each route is one HttpUpstream, built once: its limits
 * are shared by every batch on it.
 */
export function createUpstreamRouter(config: DefaultRouteConfig, clock: Clock, log?: Logger): UpstreamRouter {
  // One redactor of all the keys for every route: an upstream may echo any key it was sent, and a
  // misrouted answer could carry another route's.
  const redactor = upstreamKeyRedactor(config);
  const common = {
    timeoutMs: config.timeoutMs,
    maxAttempts: config.maxAttempts,
    baseBackoffMs: config.baseBackoffMs,
    adaptive: config.adaptive,
    maxResponseBytes: config.maxResponseBytes,
    redactor,
    clock,
    log,
  };
  const upstreamOf = (route: ResolvedRoute) =>
    new HttpUpstream({
      ...common,
      name: route.pattern,
      baseUrl: route.baseUrl,
      apiKey: route.apiKey,
      concurrency: route.maxConcurrency,
      requestsPerMinute: route.requestsPerMinute,
      tokensPerMinute: route.tokensPerMinute,
    });
  const routes = (config.routes ?? []).map((route) => ({ pattern: route.pattern, upstream: upstreamOf(route) }));
  const select = routeSelector(routes);
  const defaultRoute = config.baseUrl
    ? upstreamOf({
        pattern: 'default',
        baseUrl: config.baseUrl,
        apiKey: config.apiKey,
        maxConcurrency: config.concurrency,
        requestsPerMinute: config.requestsPerMinute,
        tokensPerMinute: config.tokensPerMinute,
      })
    : undefined;
  return {
    redactor,
    route: (model): Upstream | undefined => {
      const unflavored = withoutFlavor(model);
      if (unflavored === TEST_MODEL) return testModelUpstream;
      return select(model)?.upstream ?? (unflavored === model ? undefined : select(unflavored)?.upstream) ?? defaultRoute;
    },
    routeOf: (model) => {
      const unflavored = withoutFlavor(model);
      if (unflavored === TEST_MODEL) return TEST_MODEL;
      const route = select(model) ?? (unflavored === model ? undefined : select(unflavored));
      return route?.pattern ?? (defaultRoute ? 'default' : undefined);
    },
    status: () => [...routes.map((r) => r.upstream), ...(defaultRoute ? [defaultRoute] : [])].map((upstream) => upstream.status()),
  };
}
