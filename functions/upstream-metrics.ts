// Upstream metrics for the worker Lambda, observed from the outside so the domain stays free of
// AWS: logical requests are counted by wrapping the router's upstreams, and every attempt on the
// wire (status, latency to the response headers, connection failures) through Node's fetch
// diagnostics channels (undici publishes them; OpenTelemetry's fetch instrumentation listens to
// the same ones). Only requests to the configured upstream origins are counted.
import diagnostics from 'node:diagnostics_channel';
import type { Metrics } from '@aws-lambda-powertools/metrics';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { TEST_MODEL } from '../shared/upstream/test-model.js';
import type { Upstream, UpstreamRouter } from '../shared/upstream/types.js';

export interface UpstreamCounts {
  /** Requests that got an answer (or gave up) after at least one attempt. */
  requests: number;
  attempts: number;
  /** attempts − requests: the tries after a request's first. */
  retries: number;
  throttled: number;
  serverErrors: number;
  connectionErrors: number;
  latenciesMs: number[];
}

interface UndiciRequest {
  origin?: string | URL;
}

export class UpstreamMeter {
  private readonly origins = new Set<string>();
  private readonly started = new WeakMap<object, number>();
  private counts = emptyCounts();

  constructor(baseUrls: Iterable<string>) {
    for (const url of baseUrls) this.origins.add(new URL(url).origin);
    diagnostics.subscribe('undici:request:create', this.onCreate);
    diagnostics.subscribe('undici:request:headers', this.onHeaders);
    diagnostics.subscribe('undici:request:error', this.onError);
  }

  /** Counts a logical request each time an upstream answers (the built-in test model excepted). */
  wrap(router: UpstreamRouter): UpstreamRouter {
    const wrapped = new Map<Upstream, Upstream>();
    return {
      ...router,
      route: (model) => {
        const upstream = router.route(model);
        if (!upstream || model === TEST_MODEL) return upstream;
        let meteredUpstream = wrapped.get(upstream);
        if (!meteredUpstream) {
          meteredUpstream = {
            send: async (request, options) => {
              const result = await upstream.send(request, options);
              if (result) this.counts.requests += 1;
              return result;
            },
          };
          wrapped.set(upstream, meteredUpstream);
        }
        return meteredUpstream;
      },
    };
  }

  /** The counts since the last take, which starts a new count. */
  take(): UpstreamCounts {
    const counts = this.counts;
    this.counts = emptyCounts();
    return { ...counts, retries: Math.max(0, counts.attempts - counts.requests) };
  }

  close(): void {
    diagnostics.unsubscribe('undici:request:create', this.onCreate);
    diagnostics.unsubscribe('undici:request:headers', this.onHeaders);
    diagnostics.unsubscribe('undici:request:error', this.onError);
  }

  private ours(request: UndiciRequest): boolean {
    if (!request.origin) return false;
    return this.origins.has(new URL(String(request.origin)).origin);
  }

  private readonly onCreate = (message: unknown) => {
    const { request } = message as { request: UndiciRequest };
    if (!this.ours(request)) return;
    this.counts.attempts += 1;
    this.started.set(request, performance.now());
  };

  private readonly onHeaders = (message: unknown) => {
    const { request, response } = message as { request: UndiciRequest; response: { statusCode: number } };
    const start = this.started.get(request);
    if (start === undefined) return;
    this.started.delete(request);
    this.counts.latenciesMs.push(Math.round(performance.now() - start));
    if (response.statusCode === 429) this.counts.throttled += 1;
    else if (response.statusCode >= 500) this.counts.serverErrors += 1;
  };

  private readonly onError = (message: unknown) => {
    const { request } = message as { request: UndiciRequest };
    if (!this.started.has(request)) return;
    this.started.delete(request);
    this.counts.connectionErrors += 1;
  };
}

function emptyCounts(): UpstreamCounts {
  return { requests: 0, attempts: 0, retries: 0, throttled: 0, serverErrors: 0, connectionErrors: 0, latenciesMs: [] };
}

/** Adds one invocation's upstream counts to the metrics flushed at its end. */
export function addUpstreamMetrics(metrics: Metrics, counts: UpstreamCounts): void {
  if (counts.attempts === 0 && counts.requests === 0) return;
  metrics.addMetric('UpstreamRequests', MetricUnit.Count, counts.requests);
  metrics.addMetric('UpstreamAttempts', MetricUnit.Count, counts.attempts);
  metrics.addMetric('UpstreamRetries', MetricUnit.Count, counts.retries);
  metrics.addMetric('UpstreamThrottled', MetricUnit.Count, counts.throttled);
  metrics.addMetric('UpstreamServerErrors', MetricUnit.Count, counts.serverErrors);
  metrics.addMetric('UpstreamConnectionErrors', MetricUnit.Count, counts.connectionErrors);
  // One value per attempt; Powertools flushes every 100 values of a metric, as EMF allows.
  for (const ms of counts.latenciesMs) metrics.addMetric('UpstreamLatency', MetricUnit.Milliseconds, ms);
}
