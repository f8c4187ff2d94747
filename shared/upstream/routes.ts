// Upstream routes: which upstream serves which model, with what key and what limits. A routes
// file (UPSTREAM_ROUTES) maps model names or glob patterns to upstreams:
//
//   { "gpt-4o*": { "baseUrl": "https://api.openai.com/v1", "apiKeySecret": "env:OPENAI_API_KEY",
//                  "maxConcurrency": 50, "requestsPerMinute": 5000, "tokensPerMinute": 2000000 } }
//
// An exact model name wins over patterns; among patterns the first in the file wins; a model no
// route matches goes to the default route (UPSTREAM_BASE_URL). API keys are given inline
// (`apiKey`) or named (`apiKeySecret`): `env:NAME` reads the environment variable NAME in every
// runtime; any other name is handed to the runtime's secret resolver (Secrets Manager in AWS).
// Nothing here imports an AWS SDK: the runtime passes its resolver in.
import { z } from 'zod';

const positiveInt = z.number().int().positive();
const price = z.number().nonnegative().finite();

/** A route's fields; in AWS the stack's routes name keys by secret only (NamedKeyRouteSchema). */
const RouteObject = z
  .object({
    baseUrl: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL such as https://api.openai.com/v1' }),
    apiKey: z.string().min(1).optional(),
    apiKeySecret: z.string().min(1).optional(),
    maxConcurrency: positiveInt.optional(),
    requestsPerMinute: positiveInt.optional(),
    tokensPerMinute: positiveInt.optional(),
    // Quotas of each project on this route: most requests and estimated tokens enqueued at once
    // (README, "Quotas"); PROJECT_MAX_ENQUEUED_* bound a project across routes.
    maxEnqueuedRequests: positiveInt.optional(),
    maxEnqueuedTokens: positiveInt.optional(),
    // Prices per million tokens, for GET /v1/x/batches/{id}/usage (cached input tokens cost the
    // input price unless cachedInputPricePerMillion says otherwise); currency defaults to USD.
    inputPricePerMillion: price.optional(),
    cachedInputPricePerMillion: price.optional(),
    outputPricePerMillion: price.optional(),
    currency: z
      .string()
      .regex(/^[A-Z]{3}$/, 'currency must be a three-letter code such as USD')
      .optional(),
  })
  .strict();

export const RouteSchema = RouteObject.refine((route) => !(route.apiKey && route.apiKeySecret), {
  message: 'give apiKey or apiKeySecret, not both',
});

/** A route whose key, if any, is named by a secret, never inlined (the stack's default route). */
export const NamedKeyRouteSchema = RouteObject.omit({ apiKey: true });

const PatternSchema = z
  .string()
  .min(1, 'a model name or pattern must not be empty')
  .regex(/^[^\s]+$/, 'a model name or pattern must not contain spaces');

export const RoutesFileSchema = z.record(PatternSchema, RouteSchema).refine((routes) => Object.keys(routes).length > 0, {
  message: 'the file maps no model: give at least one "model-or-pattern": { "baseUrl": ... }',
});

export type RouteEntry = z.infer<typeof RouteSchema>;

/** A route as written in the file, with its pattern. */
export interface RouteConfig extends RouteEntry {
  pattern: string;
}

/** A route ready to use: its key resolved. */
export interface ResolvedRoute {
  /** The model name or glob pattern; `default` for the UPSTREAM_BASE_URL route. */
  pattern: string;
  baseUrl: string;
  apiKey: string | undefined;
  /** Hard cap on requests in flight; the adaptive limit stays at or under it. */
  maxConcurrency: number;
  requestsPerMinute?: number;
  tokensPerMinute?: number;
}

export class RoutesError extends Error {
  override name = 'RoutesError';
}

/** Checks the parsed JSON of a routes file; throws a RoutesError naming every problem. */
export function parseRoutes(value: unknown, source = 'routes'): RouteConfig[] {
  const parsed = RoutesFileSchema.safeParse(value);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      const where = issue.path.map((part) => (typeof part === 'number' ? `[${part}]` : JSON.stringify(part))).join('.');
      return where ? `${where}: ${issue.message}` : issue.message;
    });
    throw new RoutesError(`${source}: ${problems.join('; ')}`);
  }
  return Object.entries(parsed.data).map(([pattern, route]) => ({ pattern, ...route, baseUrl: route.baseUrl.replace(/\/+$/, '') }));
}

/** Parses the text of a routes file (JSON). */
export function parseRoutesText(text: string, source = 'routes'): RouteConfig[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new RoutesError(`${source}: not valid JSON (${(error as Error).message})`);
  }
  return parseRoutes(value, source);
}

/** Resolves a secret that is not `env:NAME`: Secrets Manager in AWS; locally there is none. */
export type SecretResolver = (name: string) => Promise<string | undefined> | string | undefined;

export const noSecretStore: SecretResolver = () => undefined;

/** Resolves every route's key: `apiKey` as is, `env:NAME` from `env`, any other secret name through `resolveSecret`. */
export async function resolveRoutes(
  routes: readonly RouteConfig[],
  options: { env: Record<string, string | undefined>; resolveSecret?: SecretResolver; defaultConcurrency: number },
): Promise<ResolvedRoute[]> {
  const problems: string[] = [];
  const resolved: ResolvedRoute[] = [];
  for (const route of routes) {
    let apiKey = route.apiKey;
    const secret = route.apiKeySecret;
    if (secret) {
      const envName = /^env:(.+)$/.exec(secret)?.[1];
      apiKey = envName !== undefined ? options.env[envName] : await (options.resolveSecret ?? noSecretStore)(secret);
      if (!apiKey) {
        problems.push(
          envName !== undefined
            ? `${JSON.stringify(route.pattern)}.apiKeySecret: the environment variable ${envName} is not set`
            : `${JSON.stringify(route.pattern)}.apiKeySecret: the secret ${JSON.stringify(secret)} could not be resolved here (locally, write env:NAME to read the environment variable NAME)`,
        );
      }
    }
    resolved.push({
      pattern: route.pattern,
      baseUrl: route.baseUrl,
      apiKey,
      maxConcurrency: route.maxConcurrency ?? options.defaultConcurrency,
      ...(route.requestsPerMinute ? { requestsPerMinute: route.requestsPerMinute } : {}),
      ...(route.tokensPerMinute ? { tokensPerMinute: route.tokensPerMinute } : {}),
    });
  }
  if (problems.length > 0) throw new RoutesError(`upstream routes: ${problems.join('; ')}`);
  return resolved;
}

/**
 * A glob pattern as a matcher: `*` any run of characters (slashes too: model names such as
 * `meta-llama/Llama-3.1-8B` have them), `?` one character, everything else literal. Path globbers
 * (picomatch, minimatch) stop `*` at a slash, which is wrong here, hence these few lines.
 */
export function globMatcher(pattern: string): (model: string) => boolean {
  if (!/[*?]/.test(pattern)) return (model) => model === pattern;
  const source = pattern
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  const regex = new RegExp(`^${source}$`);
  return (model) => regex.test(model);
}

/** Picks the route for a model: an exact name first, then the first matching pattern, else undefined. */
export function routeSelector<T extends { pattern: string }>(routes: readonly T[]): (model: string) => T | undefined {
  const exact = new Map<string, T>();
  const patterns: { matches: (model: string) => boolean; route: T }[] = [];
  for (const route of routes) {
    if (/[*?]/.test(route.pattern)) patterns.push({ matches: globMatcher(route.pattern), route });
    else if (!exact.has(route.pattern)) exact.set(route.pattern, route);
  }
  return (model) => exact.get(model) ?? patterns.find((p) => p.matches(model))?.route;
}

/** What a route's tokens cost, per million. */
export interface RoutePrice {
  inputPerMillion: number;
  cachedInputPerMillion: number;
  outputPerMillion: number;
  currency: string;
}

/** The price of the route that serves a model, when that route names one (input or output price). */
export function routePrices(routes: readonly RouteConfig[]): (model: string) => RoutePrice | undefined {
  const select = routeSelector(routes);
  return (model) => {
    const route = select(model);
    if (!route || (route.inputPricePerMillion === undefined && route.outputPricePerMillion === undefined)) return undefined;
    const input = route.inputPricePerMillion ?? 0;
    return {
      inputPerMillion: input,
      cachedInputPerMillion: route.cachedInputPricePerMillion ?? input,
      outputPerMillion: route.outputPricePerMillion ?? 0,
      currency: route.currency ?? 'USD',
    };
  };
}
