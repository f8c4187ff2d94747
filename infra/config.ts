// What a team configures when it deploys: upstream routes (API keys named by Secrets Manager
// secret, never inlined), worker concurrency, the service limits, pipelines. Given as
// props to BatchService / BatchServiceStack, or as CDK context (cdk.json or `-c`), so
// `npx cdk deploy -c batchService='{"upstream":{...}}'` needs no code change.
import type { RemovalPolicy } from 'aws-cdk-lib';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import { ConfigError, loadConfig } from '../shared/config.js';
import { PipelineConfigError, type PipelineInput, parsePipelines } from '../shared/pipelines/config.js';
import { parseRoutes, type RouteEntry, RoutesError } from '../shared/upstream/routes.js';

/**
 * One OpenAI-compatible upstream: the fields of a route in shared/upstream/routes.ts, except that
 * the key is only ever named (Secrets Manager), never given.
 */
export interface UpstreamRoute {
  /** Base URL including the version segment, e.g. `https://api.openai.com/v1`. */
  readonly baseUrl: string;
  /**
   * The Secrets Manager secret that holds the upstream's API key (the whole SecretString is the
   * key): a secret name or ARN. Omitted: the stack creates a secret for this route with a
   * placeholder value and prints its ARN, for the team to put the key in. `null`: the upstream
   * needs no key (vLLM or Ollama on a private network).
   */
  readonly apiKeySecret?: string | null;
  /** Hard cap on this route's requests in flight per worker. */
  readonly maxConcurrency?: number;
  readonly requestsPerMinute?: number;
  readonly tokensPerMinute?: number;
  /** Quotas of each project on this route: most requests and estimated tokens enqueued at once (README, "Quotas"). */
  readonly maxEnqueuedRequests?: number;
  readonly maxEnqueuedTokens?: number;
  /** Prices per million tokens, for GET /v1/x/batches/{id}/usage (shared/upstream/routes.ts). */
  readonly inputPricePerMillion?: number;
  readonly cachedInputPricePerMillion?: number;
  readonly outputPricePerMillion?: number;
  /** Three letters; default USD. */
  readonly currency?: string;
}

export interface UpstreamRoutes {
  /** Serves every model no route matches. Omitted: only `batch-test-model` works. */
  readonly default?: UpstreamRoute;
  /** Routes by model name or glob pattern (`gpt-4o*`); an exact name wins over patterns. */
  readonly routes?: Readonly<Record<string, UpstreamRoute>>;
}

/** The settings the handlers read from their environment, as in the local runtime (shared/config.ts). */
export const LIMIT_NAMES = [
  'MIN_COMPLETION_WINDOW',
  'MAX_COMPLETION_WINDOW',
  'MAX_REQUESTS_PER_BATCH',
  'MAX_FILE_BYTES',
  'MAX_LINE_BYTES',
  /** The largest JSON request body; API Gateway (10 MB) and Lambda (6 MB) cap every request anyway. */
  'MAX_JSON_BODY_BYTES',
  'CHUNK_MAX_REQUESTS',
  'CHUNK_MAX_BYTES',
  'UPSTREAM_CONCURRENCY',
  'UPSTREAM_TIMEOUT',
  'UPSTREAM_MAX_ATTEMPTS',
  'UPSTREAM_BACKOFF_BASE',
  'UPSTREAM_REQUESTS_PER_MINUTE',
  'UPSTREAM_TOKENS_PER_MINUTE',
  'CHECKPOINT_INTERVAL',
  'CHECKPOINT_LINES',
  'MAX_RESPONSE_BYTES',
  'MAX_INFLIGHT_RESPONSE_BYTES',
  /** Downloads larger than this answer 307 to a presigned S3 URL (the API Lambda's answer is capped at 6 MB). */
  'DOWNLOAD_REDIRECT_BYTES',
  /** Webhook deliveries (shared/config.ts): private receivers allowed, one attempt's timeout, the retries. */
  'WEBHOOK_ALLOW_PRIVATE_URLS',
  'WEBHOOK_TIMEOUT',
  'WEBHOOK_RETRY_BASE',
  'WEBHOOK_RETRY_FOR',
  'WEBHOOK_MAX_ENDPOINTS',
  /** A batch's chunks on the queue at once (default twice workerMaxConcurrency) (README, "Fair sharing"). */
  'CHUNK_WINDOW',
  /** Quotas of a project: most requests and estimated tokens enqueued at once, and per-project overrides (README, "Quotas"). */
  'PROJECT_MAX_ENQUEUED_REQUESTS',
  'PROJECT_MAX_ENQUEUED_TOKENS',
  'PROJECT_QUOTAS',
] as const;
export type LimitName = (typeof LIMIT_NAMES)[number];
export type Limits = Partial<Record<LimitName, string | number>>;

export interface BatchServiceProps {
  readonly upstream?: UpstreamRoutes;
  /** The worker event source's MaximumConcurrency (2..1000): caps parallel chunks, and so the load on upstreams. @default 20 */
  readonly workerMaxConcurrency?: number;
  /** The worker Lambda's timeout in minutes (1..15); the queue's visibility timeout is six times it. @default 15 */
  readonly workerTimeoutMinutes?: number;
  /** Service limits, by the names of the local runtime's environment variables. Checked at synth. */
  readonly limits?: Limits;
  /** What `cdk destroy` does with the bucket and the table. @default RemovalPolicy.RETAIN */
  readonly dataRemovalPolicy?: RemovalPolicy;
  /** Days to keep Lambda, API access and state machine logs. @default 30 */
  readonly logRetentionDays?: number;
  /** Subscribes this address to the alarm topic. @default no subscription */
  readonly alarmEmail?: string;
  /**
   * Scheduled and drop-folder pipelines (shared/pipelines/config.ts: the shape `npm start` reads
   * from PIPELINES), checked at synth. @default none
   */
  readonly pipelines?: readonly PipelineInput[];
  /**
   * Steady-state requests per second and burst of the HTTP API's stage, past which API Gateway
   * answers 429 without invoking the API Lambda; `null` leaves only API Gateway's account limits.
   * @default { rateLimit: 100, burstLimit: 200 }
   */
  readonly apiThrottle?: { readonly rateLimit: number; readonly burstLimit: number } | null;
  /**
   * Lambda concurrency reserved for the API function: its share, which is also its cap, so a flood
   * of requests (random keys included) cannot take the concurrency the workers and the lifecycle
   * need. The account keeps at least 100 unreserved, so it needs a concurrency quota of this + 100
   * or more. `null`: no reservation. @default 50
   */
  readonly apiReservedConcurrency?: number | null;
  /** CloudWatch namespace of the handlers' metrics (POWERTOOLS_METRICS_NAMESPACE). @default 'BatchService' */
  readonly metricsNamespace?: string;
  /**
   * Where every batch status change is published (source `batch-service`, detail-type `Batch
   * Status Change`): the account's `default` bus, a bus the stack creates (`stack`), or nowhere
   * (`none`). @default 'default'
   */
  readonly eventBus?: 'default' | 'stack' | 'none';
}

export const DEFAULTS = {
  workerMaxConcurrency: 20,
  workerTimeoutMinutes: 15,
  logRetentionDays: 30,
  metricsNamespace: 'BatchService',
  completionWindow: '24h',
  apiThrottle: { rateLimit: 100, burstLimit: 200 },
  apiReservedConcurrency: 50,
  eventBus: 'default',
} as const;

/** Throws a ConfigError that names every problem, so a typo stops synth instead of a deployed service. */
export function checkProps(props: BatchServiceProps): void {
  const problems: string[] = [];
  const concurrency = props.workerMaxConcurrency ?? DEFAULTS.workerMaxConcurrency;
  if (!Number.isInteger(concurrency) || concurrency < 2 || concurrency > 1000) {
    problems.push(`workerMaxConcurrency must be a whole number from 2 to 1000, not ${concurrency}`);
  }
  const timeout = props.workerTimeoutMinutes ?? DEFAULTS.workerTimeoutMinutes;
  if (!Number.isInteger(timeout) || timeout < 1 || timeout > 15) {
    problems.push(`workerTimeoutMinutes must be a whole number from 1 to 15, not ${timeout}`);
  }
  const throttle = props.apiThrottle === undefined ? DEFAULTS.apiThrottle : props.apiThrottle;
  if (
    throttle !== null &&
    (!(typeof throttle.rateLimit === 'number' && throttle.rateLimit > 0) ||
      !(Number.isInteger(throttle.burstLimit) && throttle.burstLimit >= 1 && throttle.burstLimit <= 5000))
  ) {
    problems.push(
      `apiThrottle must be { rateLimit: a positive number, burstLimit: a whole number from 1 to 5000 } or null, not ${JSON.stringify(throttle)}`,
    );
  }
  const reserved = props.apiReservedConcurrency === undefined ? DEFAULTS.apiReservedConcurrency : props.apiReservedConcurrency;
  if (reserved !== null && !(Number.isInteger(reserved) && reserved >= 1)) {
    problems.push(`apiReservedConcurrency must be a whole number of 1 or more, or null, not ${reserved}`);
  }
  if (props.eventBus !== undefined && !['default', 'stack', 'none'].includes(props.eventBus)) {
    problems.push(`eventBus must be 'default', 'stack' or 'none', not ${JSON.stringify(props.eventBus)}`);
  }
  for (const name of Object.keys(props.limits ?? {})) {
    if (!(LIMIT_NAMES as readonly string[]).includes(name)) problems.push(`limits.${name} is not one of ${LIMIT_NAMES.join(', ')}`);
  }
  try {
    // The handlers parse the same variables with the same schema at cold start.
    const config = loadConfig(limitsEnvironment(props.limits));
    if (config.upstream.timeoutMs >= timeout * 60_000) {
      problems.push(
        `limits.UPSTREAM_TIMEOUT (${config.upstream.timeoutMs / 1000}s) must be shorter than the worker's timeout (${timeout} min)`,
      );
    }
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    problems.push(error.message.replace(/^invalid configuration: /, 'limits: '));
  }
  const routes: [string, UpstreamRoute][] = [
    ...(props.upstream?.default ? ([['default', props.upstream.default]] as [string, UpstreamRoute][]) : []),
    ...Object.entries(props.upstream?.routes ?? {}),
  ];
  for (const [name, route] of routes) {
    if (!URL.canParse(route.baseUrl) || !/^https?:$/.test(new URL(route.baseUrl).protocol)) {
      problems.push(`upstream route ${name}: baseUrl must be an http(s) URL, not '${route.baseUrl}'`);
    }
    if (
      route.apiKeySecret !== undefined &&
      route.apiKeySecret !== null &&
      !/^(arn:[\w-]+:secretsmanager:|[\w/+=.@-]{1,512}$)/.test(route.apiKeySecret)
    ) {
      problems.push(`upstream route ${name}: apiKeySecret must be a Secrets Manager secret name or ARN (never the key itself)`);
    }
    if (typeof route.apiKeySecret === 'string' && /^(sk-|Bearer )/.test(route.apiKeySecret)) {
      problems.push(
        `upstream route ${name}: apiKeySecret looks like an API key; put the key in Secrets Manager and give the secret's name`,
      );
    }
  }
  const patterns = Object.entries(props.upstream?.routes ?? {});
  if (patterns.length > 0) {
    try {
      // The schema the handlers parse UPSTREAM_CONFIG's routes with, secret ids stood in for.
      parseRoutes(
        Object.fromEntries(
          patterns.map(([pattern, route]) => [pattern, routeEntry(route, route.apiKeySecret === null ? undefined : 'secret')]),
        ),
        'upstream.routes',
      );
    } catch (error) {
      if (!(error instanceof RoutesError)) throw error;
      problems.push(error.message);
    }
  }
  const days = props.logRetentionDays ?? DEFAULTS.logRetentionDays;
  if (!(Object.values(RetentionDays) as unknown[]).includes(days) || days === RetentionDays.INFINITE) {
    problems.push(`logRetentionDays must be one of CloudWatch's retention periods (1, 3, 5, 7, 14, 30, 60, 90, ...), not ${days}`);
  }
  if ('schedules' in props) {
    problems.push(
      "schedules was replaced by pipelines, whose runs read a file from S3 each time instead of resubmitting an uploaded file id (which expires): write each schedule as a pipeline with a source key (README, 'Pipelines'), and remove schedules",
    );
  }
  try {
    parsePipelines(props.pipelines ?? [], 'pipelines');
  } catch (error) {
    if (!(error instanceof PipelineConfigError)) throw error;
    problems.push(error.message.replace(/^invalid pipelines: /, 'pipelines: '));
  }
  if (problems.length > 0) throw new ConfigError(`invalid BatchService configuration: ${problems.join('; ')}`);
}

/** A route as the handlers parse it (shared/upstream/routes.ts RouteSchema), with the key's secret id. */
export function routeEntry(route: UpstreamRoute, apiKeySecretId: string | undefined): RouteEntry {
  return {
    baseUrl: route.baseUrl.replace(/\/+$/, ''),
    ...(apiKeySecretId ? { apiKeySecret: apiKeySecretId } : {}),
    ...(route.maxConcurrency !== undefined ? { maxConcurrency: route.maxConcurrency } : {}),
    ...(route.requestsPerMinute !== undefined ? { requestsPerMinute: route.requestsPerMinute } : {}),
    ...(route.tokensPerMinute !== undefined ? { tokensPerMinute: route.tokensPerMinute } : {}),
    ...(route.maxEnqueuedRequests !== undefined ? { maxEnqueuedRequests: route.maxEnqueuedRequests } : {}),
    ...(route.maxEnqueuedTokens !== undefined ? { maxEnqueuedTokens: route.maxEnqueuedTokens } : {}),
    ...(route.inputPricePerMillion !== undefined ? { inputPricePerMillion: route.inputPricePerMillion } : {}),
    ...(route.cachedInputPricePerMillion !== undefined ? { cachedInputPricePerMillion: route.cachedInputPricePerMillion } : {}),
    ...(route.outputPricePerMillion !== undefined ? { outputPricePerMillion: route.outputPricePerMillion } : {}),
    ...(route.currency !== undefined ? { currency: route.currency } : {}),
  };
}

/** The limits as environment variables (strings), only those that were set. */
/**
 * Defaults that differ from `npm start`: a worker Lambda is billed by the second whatever it waits
 * on, so it holds more requests in flight (npm run cost: $0.19 per million at 250, $0.51 at 64).
 * The upstream sees up to workerMaxConcurrency × this many requests at once.
 */
const AWS_LIMIT_DEFAULTS: Limits = { UPSTREAM_CONCURRENCY: 250 };

export function limitsEnvironment(limits: Limits | undefined, workerMaxConcurrency?: number): Record<string, string> {
  // Twice the workers: a single batch keeps every worker busy, and another project's chunk waits
  // behind at most two rounds of its chunks.
  const window: Limits = workerMaxConcurrency ? { CHUNK_WINDOW: 2 * workerMaxConcurrency } : {};
  return Object.fromEntries(Object.entries({ ...AWS_LIMIT_DEFAULTS, ...window, ...limits }).map(([name, value]) => [name, String(value)]));
}

/**
 * Props from CDK context: `batchService` (an object in cdk.json, or a JSON string with `-c`), then
 * flat keys for the common cases, which win: `upstreamBaseUrl`, `upstreamApiKeySecret`,
 * `workerMaxConcurrency`, `alarmEmail`.
 */
export function propsFromContext(tryGetContext: (key: string) => unknown): BatchServiceProps {
  const raw = tryGetContext('batchService');
  let props: BatchServiceProps = {};
  if (typeof raw === 'string') {
    try {
      props = JSON.parse(raw) as BatchServiceProps;
    } catch {
      throw new ConfigError('the context value batchService must be JSON');
    }
  } else if (raw && typeof raw === 'object') {
    props = raw as BatchServiceProps;
  }
  const baseUrl = tryGetContext('upstreamBaseUrl');
  const secret = tryGetContext('upstreamApiKeySecret');
  if (typeof baseUrl === 'string' && baseUrl) {
    props = {
      ...props,
      upstream: {
        ...props.upstream,
        default: { baseUrl, apiKeySecret: typeof secret === 'string' && secret ? (secret === 'none' ? null : secret) : undefined },
      },
    };
  }
  const concurrency = tryGetContext('workerMaxConcurrency');
  if (concurrency !== undefined) props = { ...props, workerMaxConcurrency: Number(concurrency) };
  const email = tryGetContext('alarmEmail');
  if (typeof email === 'string' && email) props = { ...props, alarmEmail: email };
  return props;
}
