import type { Clock } from '../ports.js';
import { HttpUpstream } from './http-upstream.js';
import { TEST_MODEL, testModelUpstream } from './test-model.js';
import type { Upstream, UpstreamRouter } from './types.js';

export interface DefaultRouteConfig {
  baseUrl: string | undefined;
  apiKey: string | undefined;
  concurrency: number;
  timeoutMs: number;
  maxAttempts: number;
  baseBackoffMs: number;
}

/**
 * `batch-test-model` is answered in-process; every other model goes to the default upstream,
 * when one is configured. All batches share the route's request slots.
 */
export function createUpstreamRouter(config: DefaultRouteConfig, clock: Clock): UpstreamRouter {
  const defaultRoute: Upstream | undefined = config.baseUrl
    ? new HttpUpstream({ ...config, baseUrl: config.baseUrl, clock })
    : undefined;
  return {
    route: (model) => (model === TEST_MODEL ? testModelUpstream : defaultRoute),
  };
}
