// The one builder of the domain's dependencies. `npm start` (local/service.ts) and the Lambda
// handlers (functions/runtime.ts) each make their ports (embedded or AWS adapters) and their
// upstream routers, then call this: what the steps, the chunk worker, the API and the events
// dispatcher are given, and the rules that tie them together (how long a drain lasts, when the
// service counts as ready), are written here once.
import type { ApiDeps } from '../api/app.js';
import type { StepDeps } from '../batch/steps.js';
import type { ServiceConfig } from '../config.js';
import { limitsOf } from '../config.js';
import { EventDispatcher, type EventSubscriber } from '../events/dispatcher.js';
import { httpWebhookSender, type WebhookSender } from '../events/webhook-sender.js';
import type { Logger } from '../log.js';
import type { BlobStore, Clock, Lifecycle, MetaStore, QuotaLimits, QuotaStore, WorkQueue } from '../ports.js';
import type { QuotaConfig } from '../schedule/quota.js';
import type { ResponseBudget } from '../upstream/response-budget.js';
import { routePrices } from '../upstream/routes.js';
import type { UpstreamRouter } from '../upstream/types.js';
import type { ChunkWorkerDeps } from '../work/run-chunk.js';

export interface Ports {
  meta: MetaStore;
  /** Quota counters (in the MetaStore's table); without them no quota applies. */
  quotas?: QuotaStore;
  blobs: BlobStore;
  queue: WorkQueue;
  clock: Clock;
  log: Logger;
}

/** Requests in flight when a window closes or a cancel arrives get one upstream timeout and this to finish. */
export const DRAIN_MARGIN_MS = 5_000;

export interface ComposeInput {
  config: ServiceConfig;
  ports: Ports;
  /** The router the lifecycle steps ask (validation only asks whether a route serves the model). */
  upstreams: UpstreamRouter;
  /** Told after every status change: the runtime drains the events outbox soon. */
  onTransition?: StepDeps['onTransition'];
  /** What receives every status-change event (webhooks, EventBridge, pipeline destinations). */
  subscribers?: readonly EventSubscriber[];
  /** Each route's quotas by route name, where the routes do not come from config.upstream.routes (AWS). */
  routeQuotas?: Record<string, QuotaLimits>;
}

export interface Domain {
  steps: StepDeps;
  /** After a cancel, or once the window closed, how long the lifecycle waits for chunks still running. */
  drainMs: number;
  events: EventDispatcher;
  /** Sends signed webhook requests (deliveries, and the API's test), under the URL policy. */
  webhookSender: WebhookSender;
  /** The chunk worker's dependencies: its router (with keys) and its budget of answer bytes. */
  worker(
    lifecycle: Lifecycle,
    own: { upstreams: UpstreamRouter; responses: ResponseBudget; log?: Logger; statusPollMs?: number },
  ): ChunkWorkerDeps;
  /** The API's dependencies; the runtime adds how keys resolve, downloads and its own request limits. */
  api(
    lifecycle: Lifecycle,
    own: Omit<ApiDeps, keyof Ports | 'lifecycle' | 'limits' | 'ready' | 'onTransition' | 'webhooks' | 'routeDeadlineMs'>,
  ): ApiDeps;
}

export function composeDomain({ config, ports, upstreams, onTransition, subscribers = [], routeQuotas }: ComposeInput): Domain {
  const quotaConfig: QuotaConfig = {
    defaults: config.quotas.defaults,
    projects: config.quotas.projects,
    routes: routeQuotas ?? Object.fromEntries(config.upstream.routes.map((route) => [route.pattern, limitsOf(route)])),
  };
  const steps: StepDeps = {
    ...ports,
    quotaConfig,
    upstreams,
    limits: { maxRequestsPerBatch: config.limits.maxRequestsPerBatch, maxLineBytes: config.limits.maxLineBytes },
    chunking: config.chunking,
    chunkWindow: config.chunkWindow,
    onTransition,
  };
  const webhookSender = httpWebhookSender({
    timeoutMs: config.webhooks.timeoutMs,
    policy: { allowPrivate: config.webhooks.allowPrivateUrls },
  });
  return {
    steps,
    webhookSender,
    drainMs: config.upstream.timeoutMs + DRAIN_MARGIN_MS,
    events: new EventDispatcher({ meta: ports.meta, log: ports.log }, subscribers),
    worker: (lifecycle, own) => ({
      meta: ports.meta,
      blobs: ports.blobs,
      clock: ports.clock,
      log: own.log ?? ports.log,
      lifecycle,
      upstreams: own.upstreams,
      responses: own.responses,
      checkpoints: config.checkpoints,
      // A run with a deadline hands what it ran out of time for back to the queue.
      queue: ports.queue,
      upstreamTimeoutMs: config.upstream.timeoutMs,
      chunkWindow: config.chunkWindow,
      ...(own.statusPollMs === undefined ? {} : { statusPollMs: own.statusPollMs }),
    }),
    api: (lifecycle, own) => ({
      ...ports,
      prices: routePrices(config.upstream.routes),
      ...own,
      lifecycle,
      limits: config.limits,
      routeDeadlineMs: config.apiRouteDeadlineMs,
      quotaConfig,
      routeOf: (model) => upstreams.routeOf?.(model),
      onTransition,
      webhooks: {
        policy: { allowPrivate: config.webhooks.allowPrivateUrls },
        sender: webhookSender,
        maxEndpointsPerProject: config.webhooks.maxEndpointsPerProject,
      },
      // Ready when the MetaStore answers: a read of an item that never exists.
      ready: async () => {
        await ports.meta.getBatch('batch_healthcheck');
        return true;
      },
    }),
  };
}
