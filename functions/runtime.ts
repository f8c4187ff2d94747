// What every Lambda handler shares, built once per cold start from the environment the stack
// sets (functions/contract.ts ENV): the AWS adapters of the ports, the limits (the same settings
// as `npm start`, read by shared/config.ts), and, for the worker only, the upstream router with its
// API keys read from Secrets Manager (once per cold start, never logged).
//
// UPSTREAM_CONFIG (JSON, written by infra/constructs/upstream-secrets.ts) names the upstreams:
//   { "default": { "baseUrl": "https://api.openai.com/v1", "apiKeySecret": "<secret ARN>", "maxConcurrency": 250 } | null,
//     "routes": { "glm-4*": { "baseUrl": "https://open.bigmodel.cn/api/paas/v4", "apiKeySecret": "<secret ARN or name>" } } }
// `routes` is a routes file as shared/upstream/routes.ts parses it. The default route may also
// come from UPSTREAM_BASE_URL and UPSTREAM_SECRET_ARN. A secret holds the key as plain text, or
// JSON with an "apiKey" field. Keys are never inlined.
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { EventBridgeClient } from '@aws-sdk/client-eventbridge';
import { KMSClient } from '@aws-sdk/client-kms';
import { LambdaClient } from '@aws-sdk/client-lambda';
import { S3Client } from '@aws-sdk/client-s3';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { SFNClient } from '@aws-sdk/client-sfn';
import { SQSClient } from '@aws-sdk/client-sqs';
import { z } from 'zod';
import { DynamoMetaStore } from '../shared/adapters/aws/dynamo-meta-store.js';
import { DynamoPipelineRunStore } from '../shared/adapters/aws/dynamo-pipeline-runs.js';
import { DynamoQuotaStore } from '../shared/adapters/aws/dynamo-quotas.js';
import { EventBridgeBus } from '../shared/adapters/aws/eventbridge-bus.js';
import { KmsSigningSecrets } from '../shared/adapters/aws/kms-signing-secrets.js';
import { LambdaHandOff } from '../shared/adapters/aws/lambda-hand-off.js';
import { S3BlobStore } from '../shared/adapters/aws/s3-blob-store.js';
import { secretsManagerResolver } from '../shared/adapters/aws/secrets-manager.js';
import { SfnLifecycle } from '../shared/adapters/aws/sfn-lifecycle.js';
import { SqsDeadLetters } from '../shared/adapters/aws/sqs-dead-letters.js';
import { SqsDeliveryQueue } from '../shared/adapters/aws/sqs-delivery-queue.js';
import { SqsWorkQueue } from '../shared/adapters/aws/sqs-work-queue.js';
import { systemClock } from '../shared/adapters/local/system-clock.js';
import { type ApiKeyResolver, storedApiKeys } from '../shared/api/api-keys.js';
import { type SigningSecretLookup, storedSigningSecrets } from '../shared/api/signed-tokens.js';
import { limitsOf, loadConfig, type ServiceConfig } from '../shared/config.js';
import type { Logger } from '../shared/log.js';
import { type PipelineDefinition, parsePipelinesText } from '../shared/pipelines/config.js';
import type { RunDeps } from '../shared/pipelines/run.js';
import type { BlobStore, Clock, DeliveryQueue, WorkQueue } from '../shared/ports.js';
import { composeDomain, type Domain } from '../shared/runtime/compose.js';
import { awsSubscribers } from '../shared/runtime/subscribers.js';
import { ResponseBudget } from '../shared/upstream/response-budget.js';
import { createUpstreamRouter } from '../shared/upstream/router.js';
import {
  NamedKeyRouteSchema,
  parseRoutes,
  type RouteConfig,
  type RoutePrice,
  resolveRoutes,
  routePrices,
} from '../shared/upstream/routes.js';
import type { UpstreamRouter } from '../shared/upstream/types.js';
import { CANCEL_ERROR, ENV } from './contract.js';
import { domainLogger } from './observability.js';
import { UpstreamMeter } from './upstream-metrics.js';

export interface AwsClients {
  s3: S3Client;
  dynamo: DynamoDBClient;
  sqs: SQSClient;
  sfn: SFNClient;
  secrets: SecretsManagerClient;
  eventBridge: EventBridgeClient;
  lambda: LambdaClient;
  kms: KMSClient;
}

export interface Runtime {
  config: ServiceConfig;
  meta: DynamoMetaStore;
  blobs: S3BlobStore;
  queue: WorkQueue;
  lifecycle: SfnLifecycle;
  /** The queue of webhook delivery attempts, where the stack made one (WEBHOOK_QUEUE_URL). */
  deliveryQueue: DeliveryQueue | undefined;
  clock: Clock;
  log: Logger;
  /**
   * The domain's dependencies (shared/runtime/compose.ts). Its steps (validate, enqueue, finalize)
   * ask a router without keys: validation only asks whether a route serves the model.
   */
  domain: Domain;
  api: {
    resolveApiKey: ApiKeyResolver;
    /** Zhipu's signed tokens: the secrets of signed keys, decrypted on first use (where SIGNING_KEY_ARN is set). */
    signingSecrets: SigningSecretLookup | undefined;
    downloads: { redirectAboveBytes: number; urlExpiresInSeconds: number };
    prices: (model: string) => RoutePrice | undefined;
    /** Work a request hands over at its deadline, to an invocation of this function (AWS_LAMBDA_FUNCTION_NAME, which Lambda sets). */
    handOff: LambdaHandOff | undefined;
  };
  /** Pipelines (PIPELINES_CONFIG, on the functions that run or list them), their runs, and what a run needs. */
  pipelines: {
    definitions: PipelineDefinition[];
    runs: DynamoPipelineRunStore;
    deps: RunDeps;
    bucket: string;
    /** The pipeline-run function (PIPELINE_RUN_FUNCTION), for the API's runs by hand. */
    runFunction: string | undefined;
  };
  /** The container's budget of upstream answer bytes held at once (MAX_INFLIGHT_RESPONSE_BYTES), for the worker. */
  responses: ResponseBudget;
  /** The worker's router, with keys (read from Secrets Manager on first use) and metered. */
  workerUpstreams(): Promise<{ router: UpstreamRouter; meter: UpstreamMeter }>;
  /** Stops listening for upstream metrics (tests build many runtimes in one process). */
  close(): Promise<void>;
}

/** A running chunk looks for a cancel this often (a strongly consistent GetItem each time). */
export const WORKER_STATUS_POLL_MS = 5_000;
const DEFAULT_REDIRECT_ABOVE_BYTES = 4 * 1024 * 1024;

const UpstreamConfigSchema = z.object({
  default: NamedKeyRouteSchema.nullish(),
  routes: z.record(z.string(), z.unknown()).optional(),
});

interface Overrides {
  env?: Record<string, string | undefined>;
  clients?: Partial<AwsClients>;
}

let overrides: Overrides = {};
let current: Promise<Runtime> | undefined;

/**
 * For tests and the cost bench only: the environment and clients the next runtime is built from
 * (the handlers then run over dynalite, s3rver and stand-ins). Drops the runtime already built.
 */
export function configureRuntime(next: Overrides): void {
  overrides = next;
  current?.then((built) => built.close()).catch(() => undefined);
  current = undefined;
}

/** The runtime of this container, built on first use; a failed build is tried again next time. */
export function runtime(): Promise<Runtime> {
  current ??= buildRuntime(overrides.env ?? process.env, overrides.clients ?? {}).catch((error: unknown) => {
    current = undefined;
    throw error;
  });
  return current;
}

function required(env: Record<string, string | undefined>, name: string): string {
  const value = env[name];
  if (!value) throw new Error(`the environment variable ${name} is not set (the stack sets it; see functions/contract.ts)`);
  return value;
}

/** A port whose backing resource this function was not given: any use says which variable is missing. */
function missing<T extends object>(port: string, variable: string): T {
  return new Proxy({} as T, {
    get: () => async () => {
      throw new Error(`${port} is not available to this function: ${variable} is not set`);
    },
  });
}

export async function buildRuntime(env: Record<string, string | undefined>, given: Partial<AwsClients>): Promise<Runtime> {
  const upstreamConfig = parseUpstreamConfig(env[ENV.upstreamConfig]);
  const defaultRoute = upstreamConfig.default ?? undefined;
  const config = loadConfig({
    ...env,
    UPSTREAM_BASE_URL: defaultRoute?.baseUrl ?? env.UPSTREAM_BASE_URL,
    UPSTREAM_REQUESTS_PER_MINUTE: defaultRoute?.requestsPerMinute?.toString() ?? env.UPSTREAM_REQUESTS_PER_MINUTE,
    UPSTREAM_TOKENS_PER_MINUTE: defaultRoute?.tokensPerMinute?.toString() ?? env.UPSTREAM_TOKENS_PER_MINUTE,
    // Routes come from UPSTREAM_CONFIG here, not from a file; keys never from the environment.
    UPSTREAM_ROUTES: undefined,
    UPSTREAM_API_KEY: undefined,
  });
  // UPSTREAM_CONCURRENCY is the cap of routes that name none; the default route may name its own.
  const routeDefaultConcurrency = config.upstream.concurrency;
  if (defaultRoute?.maxConcurrency) config.upstream.concurrency = defaultRoute.maxConcurrency;
  const defaultSecret = defaultRoute?.apiKeySecret ?? env[ENV.upstreamSecretArn];
  const routes: RouteConfig[] =
    upstreamConfig.routes && Object.keys(upstreamConfig.routes).length > 0
      ? parseRoutes(upstreamConfig.routes, `${ENV.upstreamConfig}.routes`)
      : [];

  // The SDK reads the region and credentials from the Lambda environment.
  const clients: AwsClients = {
    s3: given.s3 ?? new S3Client({}),
    dynamo: given.dynamo ?? new DynamoDBClient({}),
    sqs: given.sqs ?? new SQSClient({}),
    sfn: given.sfn ?? new SFNClient({}),
    secrets: given.secrets ?? new SecretsManagerClient({}),
    eventBridge: given.eventBridge ?? new EventBridgeClient({}),
    lambda: given.lambda ?? new LambdaClient({}),
    kms: given.kms ?? new KMSClient({}),
  };
  const clock = systemClock;
  const log = domainLogger();
  const meta = new DynamoMetaStore({ client: clients.dynamo, tableName: required(env, ENV.tableName) });
  const quotas = new DynamoQuotaStore({ client: clients.dynamo, tableName: required(env, ENV.tableName) });
  const bucketName = required(env, ENV.bucketName);
  const blobs = new S3BlobStore({ client: clients.s3, bucket: bucketName });
  const queueUrl = env[ENV.queueUrl];
  const queue: WorkQueue = queueUrl ? new SqsWorkQueue({ client: clients.sqs, queueUrl }) : missing('WorkQueue', ENV.queueUrl);
  // Signals need only a task token; starting an execution needs the state machine's ARN.
  const lifecycle = new SfnLifecycle({ client: clients.sfn, stateMachineArn: env[ENV.stateMachineArn], meta, cancelError: CANCEL_ERROR });

  const runs = new DynamoPipelineRunStore({ client: clients.dynamo, tableName: required(env, ENV.tableName) });
  // A pipeline's source or destination in another bucket has a store of its own, with the same client.
  const otherBuckets = new Map<string, BlobStore>();
  const objects = (bucket: string | undefined): BlobStore => {
    if (bucket === undefined || bucket === bucketName) return blobs;
    const store = otherBuckets.get(bucket) ?? new S3BlobStore({ client: clients.s3, bucket });
    otherBuckets.set(bucket, store);
    return store;
  };
  const pipelineDeadLetterUrl = env[ENV.pipelineDeadLetterQueueUrl];

  const signingKeyArn = env[ENV.signingKeyArn];
  const busName = env[ENV.eventBusName];
  const bus = busName ? new EventBridgeBus({ client: clients.eventBridge, busName }) : undefined;
  const webhookQueueUrl = env[ENV.webhookQueueUrl];
  const deliveryQueue = webhookQueueUrl ? new SqsDeliveryQueue({ client: clients.sqs, queueUrl: webhookQueueUrl }) : undefined;

  const routerConfig = (apiKeys: { defaultKey: string | undefined; routes: Awaited<ReturnType<typeof resolveRoutes>> }) => ({
    ...config.upstream,
    apiKey: apiKeys.defaultKey,
    routes: apiKeys.routes,
  });
  // Validation only needs to know that a route serves the model, so no secret is read for it.
  const keylessRoutes = routes.map((route) => ({
    pattern: route.pattern,
    baseUrl: route.baseUrl,
    apiKey: undefined,
    maxConcurrency: route.maxConcurrency ?? routeDefaultConcurrency,
  }));
  const domain = composeDomain({
    config,
    ports: { meta, quotas, blobs, queue, clock, log },
    upstreams: createUpstreamRouter(routerConfig({ defaultKey: undefined, routes: keylessRoutes }), clock, log),
    routeQuotas: Object.fromEntries([
      ...(defaultRoute ? [['default', limitsOf(defaultRoute)] as const] : []),
      ...routes.map((route) => [route.pattern, limitsOf(route)] as const),
    ]),
    subscribers: awsSubscribers({
      meta,
      clock,
      bus,
      deliveries: deliveryQueue,
      // Only the events function is given the dead-letter queue, and with it the destinations.
      ...(pipelineDeadLetterUrl
        ? {
            destinations: {
              blobs,
              runs,
              clock,
              log,
              objects,
              deadLetters: new SqsDeadLetters({ client: clients.sqs, queueUrl: pipelineDeadLetterUrl }),
            },
          }
        : {}),
    }),
  });

  let worker: Promise<{ router: UpstreamRouter; meter: UpstreamMeter }> | undefined;
  const readSecret = secretsManagerResolver(clients.secrets);
  const buildWorkerUpstreams = async () => {
    const [defaultKey, resolved] = await Promise.all([
      defaultSecret ? readSecret(defaultSecret) : Promise.resolve(undefined),
      resolveRoutes(routes, { env: {}, resolveSecret: readSecret, defaultConcurrency: routeDefaultConcurrency }),
    ]);
    const meter = new UpstreamMeter([...(config.upstream.baseUrl ? [config.upstream.baseUrl] : []), ...routes.map((r) => r.baseUrl)]);
    const router = meter.wrap(createUpstreamRouter(routerConfig({ defaultKey, routes: resolved }), clock, log));
    return { router, meter };
  };

  return {
    config,
    meta,
    blobs,
    queue,
    lifecycle,
    deliveryQueue,
    clock,
    log,
    domain,
    pipelines: {
      definitions: env[ENV.pipelinesConfig] ? parsePipelinesText(env[ENV.pipelinesConfig]!, ENV.pipelinesConfig) : [],
      runs,
      deps: { meta, blobs, runs, clock, lifecycle, log, objects, limits: config.limits },
      bucket: bucketName,
      runFunction: env[ENV.pipelineRunFunction],
    },
    responses: new ResponseBudget(config.upstream.maxInflightResponseBytes),
    api: {
      resolveApiKey: storedApiKeys(meta, { clock }),
      signingSecrets: signingKeyArn
        ? storedSigningSecrets(
            async (id) => (await meta.getSigningKey(id))?.encryptedSecret,
            (id, ciphertext) => new KmsSigningSecrets({ client: clients.kms, keyId: signingKeyArn }).decrypt(id, ciphertext),
            { clock },
          )
        : undefined,
      // UPSTREAM_CONFIG's routes, whose prices the usage route reads (no key is needed for that).
      prices: routePrices(routes),
      downloads: {
        redirectAboveBytes: Number(env.DOWNLOAD_REDIRECT_BYTES ?? DEFAULT_REDIRECT_ABOVE_BYTES),
        urlExpiresInSeconds: 300,
      },
      handOff: env.AWS_LAMBDA_FUNCTION_NAME
        ? new LambdaHandOff({ client: clients.lambda, functionName: env.AWS_LAMBDA_FUNCTION_NAME })
        : undefined,
    },
    workerUpstreams() {
      worker ??= buildWorkerUpstreams().catch((error: unknown) => {
        worker = undefined;
        throw error;
      });
      return worker;
    },
    async close() {
      (await worker?.catch(() => undefined))?.meter.close();
    },
  };
}

function parseUpstreamConfig(text: string | undefined): z.infer<typeof UpstreamConfigSchema> {
  if (!text?.trim()) return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new Error(`${ENV.upstreamConfig} is not valid JSON (${(error as Error).message})`);
  }
  const parsed = UpstreamConfigSchema.safeParse(value);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join('.') || '(top)'}: ${issue.message}`).join('; ');
    throw new Error(`${ENV.upstreamConfig}: ${problems}`);
  }
  return parsed.data;
}
