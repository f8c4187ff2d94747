// The embedded runtime: the same api/ routes, workers and lifecycle steps as in AWS, over the
// local adapters (filesystem blobs, an embedded DynamoDB, an in-process queue and driver).

import { mkdir } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { type ServerType, serve } from '@hono/node-server';
import { DynamoMetaStore } from '../shared/adapters/aws/dynamo-meta-store.js';
import { DynamoPipelineRunStore } from '../shared/adapters/aws/dynamo-pipeline-runs.js';
import { DynamoQuotaStore } from '../shared/adapters/aws/dynamo-quotas.js';
import { startEmbeddedDynamo } from '../shared/adapters/local/embedded-dynamo.js';
import { FsBlobStore } from '../shared/adapters/local/fs-blob-store.js';
import { LocalLifecycle } from '../shared/adapters/local/local-lifecycle.js';
import { LocalWorkQueue } from '../shared/adapters/local/local-work-queue.js';
import { systemClock } from '../shared/adapters/local/system-clock.js';
import { createApiApp } from '../shared/api/app.js';
import { localSigningSecrets } from '../shared/api/signed-tokens.js';
import { sweepExpiredFiles } from '../shared/batch/file-expiry.js';
import { sweepUnstartedBatches } from '../shared/batch/start-sweep.js';
import { ConfigError, type ServiceConfig } from '../shared/config.js';
import { type DeliveryPump, newDeliveryStats, startDeliveryPump } from '../shared/events/deliveries.js';
import { type EventPump, startEventPump } from '../shared/events/dispatcher.js';
import { errorMessage, type Logger } from '../shared/log.js';
import { composeDomain } from '../shared/runtime/compose.js';
import { localSubscribers } from '../shared/runtime/subscribers.js';
import { DEFAULT_COMPLETE_LEASE_MS } from '../shared/uploads/model.js';
import { uploadSweeper } from '../shared/uploads/sweep.js';
import { redactingLogger } from '../shared/upstream/redact.js';
import { ResponseBudget } from '../shared/upstream/response-budget.js';
import { createUpstreamRouter, upstreamKeyRedactor } from '../shared/upstream/router.js';
import { RoutesError, resolveRoutes } from '../shared/upstream/routes.js';
import { giveUpChunk, runChunk } from '../shared/work/run-chunk.js';
import { answerClientErrors } from './guards.js';
import { startPeriodic } from './periodic.js';
import { loadPipelinesFile, localPipelines } from './pipelines.js';

export interface RunningService {
  url: string;
  port: number;
  stop(): Promise<void>;
}

/** How often the events outbox is drained whatever happens (a change made just before a crash waits this long at most). */
const EVENT_SWEEP_MS = 5_000;
/** Webhook attempts in flight at once, and to one endpoint. */
const WEBHOOK_CONCURRENCY = 32;
const WEBHOOK_PER_ENDPOINT = 4;

export interface ServiceOptions {
  /** Counts /healthz shows beside its status (main.ts: errors the process guard caught). */
  healthDetails?: () => Record<string, number>;
}

export async function startService(config: ServiceConfig, serviceLog: Logger, options: ServiceOptions = {}): Promise<RunningService> {
  // Locally an apiKeySecret is `env:NAME`: there is no secret store to ask for anything else.
  const routes = await resolveRoutes(config.upstream.routes, { env: process.env, defaultConcurrency: config.upstream.concurrency }).catch(
    (error: unknown) => {
      throw error instanceof RoutesError ? new ConfigError(`invalid configuration: ${error.message}`) : error;
    },
  );
  // No upstream key reaches a log line, whoever writes it.
  const log = redactingLogger(serviceLog, upstreamKeyRedactor({ apiKey: config.upstream.apiKey, routes }));
  const pipelineDefinitions = config.pipelinesFile ? loadPipelinesFile(config.pipelinesFile) : [];
  await mkdir(config.dataDir, { recursive: true });
  const dynamo = await startEmbeddedDynamo({ path: join(config.dataDir, 'meta') });
  const meta = new DynamoMetaStore({ client: dynamo.client, tableName: dynamo.tableName });
  const quotas = new DynamoQuotaStore({ client: dynamo.client, tableName: dynamo.tableName });
  const blobs = new FsBlobStore(join(config.dataDir, 'blobs'));
  const clock = systemClock;
  // Pipelines read their sources from and write their results to folders under DATA_DIR.
  const runs = new DynamoPipelineRunStore({ client: dynamo.client, tableName: dynamo.tableName });
  const pipelineObjects = new FsBlobStore(config.dataDir);
  const upstreams = createUpstreamRouter({ ...config.upstream, routes }, clock, log);
  // One budget of answer bytes for every chunk this process runs.
  const responses = new ResponseBudget(config.upstream.maxInflightResponseBytes);
  const queue = new LocalWorkQueue({
    concurrency: config.localWorkers,
    onDeadLetter: (message, error) =>
      // Only when giving the chunk up failed too: the batch is finalized at the end of its window.
      log.log('error', 'chunk dropped after repeated failures', {
        batchId: message.batchId,
        chunk: message.chunk.index,
        error: errorMessage(error),
      }),
  });
  // The pump drains the events outbox soon after each status change, and every few seconds.
  let pump: EventPump | undefined;
  let deliveryPump: DeliveryPump | undefined;
  const domain = composeDomain({
    config,
    ports: { meta, quotas, blobs, queue, clock, log },
    upstreams,
    onTransition: () => pump?.notify(),
    subscribers: localSubscribers({
      meta,
      clock,
      onDeliveries: (deliveries) => deliveryPump?.offer(deliveries),
      ...(pipelineDefinitions.length > 0
        ? {
            destinations: {
              blobs,
              runs,
              clock,
              log,
              objects: () => pipelineObjects,
              // The run shows delivery_failed at /v1/x/pipelines/{name}/runs; the log says so as an error.
              deadLetters: { park: async (message) => log.log('error', 'pipeline results could not be written', message) },
            },
          }
        : {}),
    }),
  });
  // Webhook deliveries recorded by the subscriber (and any left by an earlier run) go out from here.
  const deliveryStats = newDeliveryStats();
  deliveryPump = startDeliveryPump(
    {
      meta,
      clock,
      log,
      sender: domain.webhookSender,
      retry: { baseMs: config.webhooks.retryBaseMs, forMs: config.webhooks.retryForMs },
      // An attempt lasts at most the timeout: a claim lapses soon after a sender died holding it.
      claimMs: config.webhooks.timeoutMs + 5_000,
      stats: deliveryStats,
    },
    { meta, intervalMs: config.webhooks.pollIntervalMs, concurrency: WEBHOOK_CONCURRENCY, perEndpoint: WEBHOOK_PER_ENDPOINT },
  );
  pump = startEventPump(domain.events, { intervalMs: EVENT_SWEEP_MS, log });
  const lifecycle = new LocalLifecycle(domain.steps, { drainTimeoutMs: domain.drainMs });
  const worker = domain.worker(lifecycle, { upstreams, responses });
  const pipelines = localPipelines({
    pipelines: pipelineDefinitions,
    dataDir: config.dataDir,
    log,
    deps: {
      meta,
      blobs,
      runs,
      clock,
      lifecycle,
      log,
      objects: () => pipelineObjects,
      limits: config.limits,
      onTransition: () => pump?.notify(),
    },
  });
  queue.start(async (message, delivery) => {
    try {
      await runChunk(worker, message);
    } catch (error) {
      if (delivery.last) {
        // Retrying did not mend it: the chunk's lines are recorded as failed, and the batch goes on to end failed.
        await giveUpChunk(worker, message, error);
        return;
      }
      log.log('warn', 'chunk failed; it will be delivered again', {
        batchId: message.batchId,
        chunk: message.chunk.index,
        receives: delivery.receives,
        error: errorMessage(error),
      });
      throw error;
    }
  });

  const app = createApiApp(
    domain.api(lifecycle, {
      apiKeys: config.apiKeys,
      // The id.secret keys among API_KEYS verify Zhipu's signed tokens.
      ...(config.apiKeys ? { signingSecrets: localSigningSecrets(config.apiKeys) } : {}),
      // No gateway cuts a request short here: a claim lasts as long as the largest join may take.
      completeLeaseMs: DEFAULT_COMPLETE_LEASE_MS,
      pipelines: { definitions: pipelineDefinitions, runs, start: pipelines.start },
      healthDetails: () => ({
        ...options.healthDetails?.(),
        webhooks_delivered: deliveryStats.delivered,
        webhooks_retried: deliveryStats.retried,
        webhooks_given_up: deliveryStats.givenUp,
      }),
    }),
  );

  // Parts of uploads that expired or were cancelled go at start-up (before any request can be
  // storing a part) and then every UPLOAD_SWEEP_INTERVAL.
  const sweeper = uploadSweeper({ meta, blobs, clock, log });
  await sweeper.sweep({ listedBeforeServing: true });
  const uploadSweep = startPeriodic('upload sweep', () => sweeper.sweep(), config.uploadSweepIntervalMs, log);

  // Batches left validating with nothing driving them (a crash between a create and its start).
  const startSweep = startPeriodic(
    'start sweep',
    () => sweepUnstartedBatches({ ...domain.steps, lifecycle }, config.startSweep),
    config.startSweep.intervalMs,
    log,
  );

  // Files past their expiry that no batch pins (dynalite has no TTL): at start-up, then every FILE_SWEEP_INTERVAL.
  const fileSweep = startPeriodic('file sweep', () => sweepExpiredFiles({ meta, blobs, clock, log }), config.fileSweepIntervalMs, log);
  fileSweep.run();

  // Schedules and drop folders are set up before the service answers: a file dropped once it is
  // ready is seen.
  await pipelines.run();
  const server = await new Promise<ServerType>((resolve) => {
    const started = serve({ fetch: app.fetch, hostname: config.host, port: config.port }, () => resolve(started));
  });
  answerClientErrors(server as Server, log);
  const port = (server.address() as AddressInfo).port;
  const resumed = await lifecycle.resume();
  if (resumed > 0) log.log('info', 'resumed unfinished batches', { batches: resumed });

  return {
    url: `http://${config.host}:${port}`,
    port,
    async stop() {
      const sweeps = [uploadSweep, startSweep, fileSweep].map((sweep) => sweep.stop());
      await pipelines.stop();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await Promise.all(sweeps);
      await lifecycle.stop();
      await queue.stop();
      await pump?.stop();
      await deliveryPump?.stop();
      await dynamo.close();
    },
  };
}
