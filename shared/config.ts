// Service configuration, read once from the environment and checked with zod, so a typo in a
// setting stops start-up with a clear message instead of misbehaving later.
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { DEFAULT_MAX_RESPONSE_BYTES } from './upstream/http-upstream.js';
import { parseRoutesText, type RouteConfig, RoutesError } from './upstream/routes.js';

/** Default MAX_INFLIGHT_RESPONSE_BYTES: answer bytes one process holds at once (a worker Lambda has 1,024 MB). */
export const DEFAULT_MAX_INFLIGHT_RESPONSE_BYTES = 128 * 1024 * 1024;

const DURATION = /^(\d+)(ms|s|m|h)$/;
const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const;

/** Parses "500ms", "5s", "10m", "24h" into milliseconds; undefined when malformed. */
export function parseDuration(text: string): number | undefined {
  const match = DURATION.exec(text.trim());
  if (!match) return undefined;
  return Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS];
}

const duration = z.string().refine((v) => parseDuration(v) !== undefined, 'a duration such as 500ms, 5s, 10m or 24h');
const positiveInt = z.coerce.number().int().positive();

const apiKeyPairs = z.string().transform((text, ctx) => {
  const keys = new Map<string, string>();
  for (const pair of text
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const separator = pair.lastIndexOf(':');
    const key = pair.slice(0, separator).trim();
    const project = pair.slice(separator + 1).trim();
    if (separator <= 0 || !key || !project) {
      ctx.addIssue({ code: 'custom', message: 'each entry must be key:project' });
      return z.NEVER;
    }
    keys.set(key, project);
  }
  return keys;
});

/** PROJECT_QUOTAS: JSON, project → its own quotas (over PROJECT_MAX_ENQUEUED_REQUESTS / _TOKENS). */
const projectQuotas = z.string().transform((text, ctx) => {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    ctx.addIssue({ code: 'custom', message: 'must be JSON such as {"team-a": {"maxEnqueuedRequests": 100000}}' });
    return z.NEVER;
  }
  const limit = z.number().int().positive();
  const parsed = z
    .record(z.string().min(1), z.object({ maxEnqueuedRequests: limit.optional(), maxEnqueuedTokens: limit.optional() }).strict())
    .safeParse(value);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) ctx.addIssue({ code: 'custom', message: `${issue.path.join('.')}: ${issue.message}` });
    return z.NEVER;
  }
  return parsed.data;
});

const EnvSchema = z.object({
  HOST: z.string().default('127.0.0.1'),
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  DATA_DIR: z.string().default('.data'),
  API_KEYS: apiKeyPairs.optional(),
  UPSTREAM_BASE_URL: z.url().optional(),
  UPSTREAM_API_KEY: z.string().optional(),
  UPSTREAM_CONCURRENCY: positiveInt.default(64),
  UPSTREAM_TIMEOUT: duration.default('10m'),
  UPSTREAM_MAX_ATTEMPTS: positiveInt.default(6),
  UPSTREAM_BACKOFF_BASE: duration.default('500ms'),
  UPSTREAM_REQUESTS_PER_MINUTE: positiveInt.optional(),
  UPSTREAM_TOKENS_PER_MINUTE: positiveInt.optional(),
  UPSTREAM_ROUTES: z.string().optional(),
  MAX_RESPONSE_BYTES: positiveInt.default(DEFAULT_MAX_RESPONSE_BYTES),
  MAX_INFLIGHT_RESPONSE_BYTES: positiveInt.default(DEFAULT_MAX_INFLIGHT_RESPONSE_BYTES),
  CHECKPOINT_INTERVAL: duration.default('2s'),
  CHECKPOINT_LINES: positiveInt.default(500),
  MIN_COMPLETION_WINDOW: duration.default('24h'),
  MAX_COMPLETION_WINDOW: duration.default('336h'),
  MAX_REQUESTS_PER_BATCH: positiveInt.default(50_000),
  MAX_FILE_BYTES: positiveInt.default(200 * 1024 * 1024),
  MAX_LINE_BYTES: positiveInt.default(6 * 1024 * 1024),
  MAX_JSON_BODY_BYTES: positiveInt.default(1024 * 1024),
  CHUNK_MAX_REQUESTS: positiveInt.default(500),
  CHUNK_MAX_BYTES: positiveInt.default(4 * 1024 * 1024),
  LOCAL_WORKERS: positiveInt.default(4),
  CHUNK_WINDOW: positiveInt.optional(),
  PROJECT_MAX_ENQUEUED_REQUESTS: positiveInt.optional(),
  PROJECT_MAX_ENQUEUED_TOKENS: positiveInt.optional(),
  PROJECT_QUOTAS: projectQuotas.optional(),
  UPLOAD_SWEEP_INTERVAL: duration.default('10m'),
  START_SWEEP_AFTER: duration.default('5m'),
  START_SWEEP_GIVE_UP_AFTER: duration.default('1h'),
  START_SWEEP_INTERVAL: duration.default('1m'),
  FILE_SWEEP_INTERVAL: duration.default('10m'),
  API_ROUTE_DEADLINE: duration.optional(),
  WEBHOOK_ALLOW_PRIVATE_URLS: z.enum(['true', 'false'], { error: "must be 'true' or 'false'" }).default('false'),
  WEBHOOK_TIMEOUT: duration.default('10s'),
  WEBHOOK_RETRY_BASE: duration.default('5s'),
  WEBHOOK_RETRY_FOR: duration.default('72h'),
  WEBHOOK_MAX_ENDPOINTS: positiveInt.default(20),
  WEBHOOK_POLL_INTERVAL: duration.default('1s'),
  PIPELINES: z.string().min(1).optional(),
});

export interface ServiceConfig {
  host: string;
  port: number;
  dataDir: string;
  /** PIPELINES: the path of the pipelines file `npm start` runs (shared/pipelines/config.ts); unset, none. */
  pipelinesFile: string | undefined;
  /** Bearer key → project. Undefined: the service runs open, as the single project `default`. */
  apiKeys: Map<string, string> | undefined;
  upstream: {
    baseUrl: string | undefined;
    apiKey: string | undefined;
    concurrency: number;
    timeoutMs: number;
    maxAttempts: number;
    /** Backoff before the second attempt; doubles with each further attempt (full jitter). */
    baseBackoffMs: number;
    /** Limits of the default route (UPSTREAM_BASE_URL). */
    requestsPerMinute: number | undefined;
    tokensPerMinute: number | undefined;
    /** Routes by model name or pattern, from the UPSTREAM_ROUTES file (keys not yet resolved). */
    routes: RouteConfig[];
    /** The most bytes of one answer that are read; a larger answer is that line's error `response_too_large`. */
    maxResponseBytes: number;
    /** Answer bytes held at once by the process (being read, or in lines not yet written); past it, new requests wait. */
    maxInflightResponseBytes: number;
  };
  /** A chunk worker saves its finished lines every `intervalMs`, or sooner once `maxLines` wait. */
  checkpoints: { intervalMs: number; maxLines: number };
  limits: {
    minCompletionWindowMs: number;
    maxCompletionWindowMs: number;
    maxRequestsPerBatch: number;
    maxFileBytes: number;
    maxLineBytes: number;
    /** The largest JSON request body (POST /v1/batches, the Uploads API); larger answers 413 unread. */
    maxJsonBodyBytes: number;
  };
  chunking: { maxRequests: number; maxBytes: number };
  /** A batch's chunks on the work queue at once (CHUNK_WINDOW; default twice LOCAL_WORKERS). */
  chunkWindow: number;
  /** What a project may have enqueued at once: PROJECT_MAX_ENQUEUED_*, and PROJECT_QUOTAS per project. */
  quotas: {
    defaults: { requests?: number; tokens?: number };
    projects: Record<string, { requests?: number; tokens?: number }>;
  };
  localWorkers: number;
  /** `npm start` deletes the parts of uploads that expired or were cancelled this often (and at start-up). */
  uploadSweepIntervalMs: number;
  /**
   * Batches left `validating` without a lifecycle execution (shared/batch/start-sweep.ts): started
   * again once `afterMs` old, failed once `giveUpAfterMs` old; `npm start` looks every `intervalMs`.
   */
  startSweep: { afterMs: number; giveUpAfterMs: number; intervalMs: number };
  /** `npm start` deletes the files past their expiry that no batch pins this often (and at start-up). */
  fileSweepIntervalMs: number;
  /** API_ROUTE_DEADLINE: a route still running this long answers 503 (the API Lambda: 25 s); undefined: none. */
  apiRouteDeadlineMs: number | undefined;
  webhooks: {
    /** WEBHOOK_ALLOW_PRIVATE_URLS: receivers on loopback and private addresses, and http://, are allowed. */
    allowPrivateUrls: boolean;
    /** One attempt's time to connect and answer. */
    timeoutMs: number;
    /** The wait before the first retry; it doubles with each further one (with jitter). */
    retryBaseMs: number;
    /** After this long since the event, a delivery that keeps failing is given up. */
    retryForMs: number;
    maxEndpointsPerProject: number;
    /** `npm start` looks for due deliveries this often (and at once after an event). */
    pollIntervalMs: number;
  };
}

/** `{ maxEnqueuedRequests, maxEnqueuedTokens }` as quota limits, absent ones left out. */
export function limitsOf(quota: { maxEnqueuedRequests?: number; maxEnqueuedTokens?: number }): { requests?: number; tokens?: number } {
  return {
    ...(quota.maxEnqueuedRequests !== undefined ? { requests: quota.maxEnqueuedRequests } : {}),
    ...(quota.maxEnqueuedTokens !== undefined ? { tokens: quota.maxEnqueuedTokens } : {}),
  };
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Reads and checks the UPSTREAM_ROUTES file; a ConfigError names the file and every problem. */
function loadRoutes(path: string | undefined, readFile: (path: string) => string): RouteConfig[] {
  if (!path) return [];
  let text: string;
  try {
    text = readFile(path);
  } catch (error) {
    throw new ConfigError(
      `invalid configuration: UPSTREAM_ROUTES: cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`,
    );
  }
  try {
    return parseRoutesText(text, `UPSTREAM_ROUTES (${path})`);
  } catch (error) {
    if (error instanceof RoutesError) throw new ConfigError(`invalid configuration: ${error.message}`);
    throw error;
  }
}

export function loadConfig(
  env: Record<string, string | undefined>,
  readFile: (path: string) => string = (path) => readFileSync(path, 'utf8'),
): ServiceConfig {
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = EnvSchema.safeParse(present);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new ConfigError(`invalid configuration: ${problems}`);
  }
  const e = parsed.data;
  const startSweep = {
    afterMs: parseDuration(e.START_SWEEP_AFTER)!,
    giveUpAfterMs: parseDuration(e.START_SWEEP_GIVE_UP_AFTER)!,
    intervalMs: parseDuration(e.START_SWEEP_INTERVAL)!,
  };
  if (startSweep.giveUpAfterMs <= startSweep.afterMs) {
    throw new ConfigError('invalid configuration: START_SWEEP_GIVE_UP_AFTER must be longer than START_SWEEP_AFTER');
  }
  if (startSweep.intervalMs === 0) throw new ConfigError('invalid configuration: START_SWEEP_INTERVAL must be more than 0');
  return {
    host: e.HOST,
    port: e.PORT,
    dataDir: e.DATA_DIR,
    pipelinesFile: e.PIPELINES,
    apiKeys: e.API_KEYS,
    upstream: {
      baseUrl: e.UPSTREAM_BASE_URL?.replace(/\/+$/, ''),
      apiKey: e.UPSTREAM_API_KEY,
      concurrency: e.UPSTREAM_CONCURRENCY,
      timeoutMs: parseDuration(e.UPSTREAM_TIMEOUT)!,
      maxAttempts: e.UPSTREAM_MAX_ATTEMPTS,
      baseBackoffMs: parseDuration(e.UPSTREAM_BACKOFF_BASE)!,
      requestsPerMinute: e.UPSTREAM_REQUESTS_PER_MINUTE,
      tokensPerMinute: e.UPSTREAM_TOKENS_PER_MINUTE,
      routes: loadRoutes(e.UPSTREAM_ROUTES, readFile),
      maxResponseBytes: e.MAX_RESPONSE_BYTES,
      maxInflightResponseBytes: e.MAX_INFLIGHT_RESPONSE_BYTES,
    },
    checkpoints: { intervalMs: parseDuration(e.CHECKPOINT_INTERVAL)!, maxLines: e.CHECKPOINT_LINES },
    limits: {
      minCompletionWindowMs: parseDuration(e.MIN_COMPLETION_WINDOW)!,
      maxCompletionWindowMs: parseDuration(e.MAX_COMPLETION_WINDOW)!,
      maxRequestsPerBatch: e.MAX_REQUESTS_PER_BATCH,
      maxFileBytes: e.MAX_FILE_BYTES,
      maxLineBytes: e.MAX_LINE_BYTES,
      maxJsonBodyBytes: e.MAX_JSON_BODY_BYTES,
    },
    chunking: { maxRequests: e.CHUNK_MAX_REQUESTS, maxBytes: e.CHUNK_MAX_BYTES },
    localWorkers: e.LOCAL_WORKERS,
    chunkWindow: e.CHUNK_WINDOW ?? 2 * e.LOCAL_WORKERS,
    quotas: {
      defaults: limitsOf({ maxEnqueuedRequests: e.PROJECT_MAX_ENQUEUED_REQUESTS, maxEnqueuedTokens: e.PROJECT_MAX_ENQUEUED_TOKENS }),
      projects: Object.fromEntries(Object.entries(e.PROJECT_QUOTAS ?? {}).map(([project, quota]) => [project, limitsOf(quota)])),
    },
    uploadSweepIntervalMs: parseDuration(e.UPLOAD_SWEEP_INTERVAL)!,
    startSweep,
    fileSweepIntervalMs: parseDuration(e.FILE_SWEEP_INTERVAL)!,
    apiRouteDeadlineMs: e.API_ROUTE_DEADLINE === undefined ? undefined : parseDuration(e.API_ROUTE_DEADLINE)!,
    webhooks: {
      allowPrivateUrls: e.WEBHOOK_ALLOW_PRIVATE_URLS === 'true',
      timeoutMs: parseDuration(e.WEBHOOK_TIMEOUT)!,
      retryBaseMs: parseDuration(e.WEBHOOK_RETRY_BASE)!,
      retryForMs: parseDuration(e.WEBHOOK_RETRY_FOR)!,
      maxEndpointsPerProject: e.WEBHOOK_MAX_ENDPOINTS,
      pollIntervalMs: parseDuration(e.WEBHOOK_POLL_INTERVAL)!,
    },
  };
}
