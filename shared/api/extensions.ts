// Extension routes: what this service offers beyond OpenAI's Batch API, all under /v1/x/ (and
// /v4/x/), so that no future OpenAI path can collide with them. The official SDKs reach them with
// `client.get` / `client.post`. Fields this service adds to OpenAI's objects are named x_….
//
//   POST /v1/x/batches/{id}/retry    a new batch of the ended batch's failed lines (body: codes, statuses)
//   GET  /v1/x/batches/{id}/results  the result lines recorded so far (after, limit) or one (custom_id)
//   GET  /v1/x/batches/{id}/usage    tokens in and out, and the cost when the model's route has prices
import type { Context, Hono } from 'hono';
import { z } from 'zod';
import type { BatchRecord } from '../batch/model.js';
import { BadResultsCursor, findResult, type ResultsCursor, ResultsMoved, resultsPage } from '../batch/results-so-far.js';
import { RETRIABLE, RetryRefused, type RetrySelection, retryBatch } from '../batch/retry.js';
import { batchCost } from '../batch/usage.js';
import { isIdOf } from '../ids.js';
import type { BlobStore, Clock, Lifecycle, MetaStore } from '../ports.js';
import type { RoutePrice } from '../upstream/routes.js';
import { ApiError, badRequest, conflict, notFound, quoted } from './errors.js';
import { toBatchObject } from './objects.js';
import { DEFAULT_MAX_JSON_BODY_BYTES, jsonBody, jsonBodyLimit, parse } from './request.js';
import { pageLimit } from './schemas.js';

type Env = { Variables: { project: string; requestId: string } };

export interface ExtensionDeps {
  meta: MetaStore;
  blobs: BlobStore;
  lifecycle: Lifecycle;
  clock: Clock;
  limits: { maxJsonBodyBytes?: number };
  /** The price of the route that serves a model, if it has one (for /usage). */
  prices?: (model: string) => RoutePrice | undefined;
  onTransition?: (batch: BatchRecord) => void;
}

const STATUS_CLASS = /^[1-5]xx$/;

const retryBody = z
  .object({
    codes: z.array(z.string().min(1).max(64), { error: 'codes must be a list of error codes such as "batch_expired"' }).max(50).optional(),
    statuses: z
      .array(
        z.union([
          z.number().int().min(100).max(599),
          z.string().regex(STATUS_CLASS, { error: 'a status class is written like "5xx"' }) as z.ZodType<`${1 | 2 | 3 | 4 | 5}xx`>,
        ]),
        { error: 'statuses must be a list of HTTP statuses such as 429 or "5xx"' },
      )
      .max(50)
      .optional(),
  })
  .strict();

const resultsQuery = z.object({
  limit: pageLimit(1_000, 100),
  after: z.string().min(1).max(16_384).optional(),
  custom_id: z.string().min(1).max(4096).optional(),
});

const cursorSchema: z.ZodType<ResultsCursor> = z.union([
  z.object({
    phase: z.literal('c'),
    done: z.array(z.number().int().nonnegative()).max(100_000),
    chunk: z.number().int().nonnegative().optional(),
    kind: z.enum(['o', 'e']).optional(),
    offset: z.number().int().nonnegative().optional(),
  }),
  z.object({ phase: z.literal('f'), kind: z.enum(['o', 'e']), offset: z.number().int().nonnegative() }),
]);

/** Cursors are opaque to clients: base64url JSON. */
const encodeCursor = (cursor: ResultsCursor) => Buffer.from(JSON.stringify(cursor)).toString('base64url');

function decodeCursor(text: string): ResultsCursor {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(text, 'base64url').toString('utf8'));
  } catch {
    value = undefined;
  }
  const parsed = cursorSchema.safeParse(value);
  if (!parsed.success) throw badRequest("'after' is not a cursor this service gave: pass the next_after of the previous page.", 'after');
  return parsed.data;
}

export function registerExtensionRoutes(api: Hono<Env>, deps: ExtensionDeps): void {
  const jsonLimit = jsonBodyLimit(deps.limits.maxJsonBodyBytes ?? DEFAULT_MAX_JSON_BODY_BYTES);

  async function batchOf(c: Context<Env>): Promise<BatchRecord> {
    const id = c.req.param('id')!;
    const batch = isIdOf('batch', id) ? await deps.meta.getBatch(id) : undefined;
    // Another project's batch answers exactly like a missing one.
    if (!batch || batch.project !== c.get('project')) throw notFound('batch', id);
    return batch;
  }

  api.post('/x/batches/:id/retry', jsonLimit, async (c) => {
    const batch = await batchOf(c);
    // An empty body (or none) retries what is retriable.
    const text = await c.req.text();
    const body = text.trim() ? parse(retryBody, await jsonBody({ req: { text: async () => text } })) : {};
    const selection: RetrySelection =
      body.codes === undefined && body.statuses === undefined ? RETRIABLE : { codes: body.codes ?? [], statuses: body.statuses ?? [] };
    try {
      return c.json(toBatchObject(await retryBatch(deps, batch, selection)));
    } catch (error) {
      if (error instanceof RetryRefused) throw conflict(error.message, error.code);
      throw error;
    }
  });

  api.get('/x/batches/:id/results', async (c) => {
    const batch = await batchOf(c);
    const query = parse(resultsQuery, c.req.query());
    if (query.custom_id !== undefined) {
      const line = await findResult(deps, batch, query.custom_id);
      if (line === undefined) {
        throw new ApiError(
          404,
          `Batch ${batch.id} has no result for custom_id '${quoted(query.custom_id)}' yet.`,
          'invalid_request_error',
          'custom_id',
          'result_not_found',
        );
      }
      return c.json(line);
    }
    const after = query.after === undefined ? undefined : decodeCursor(query.after);
    try {
      const page = await resultsPage(deps, batch, after, query.limit);
      return c.json({
        object: 'list',
        data: page.lines,
        has_more: page.hasMore,
        next_after: encodeCursor(page.next),
        x_batch_status: batch.status,
      });
    } catch (error) {
      if (error instanceof ResultsMoved) throw conflict(error.message, 'results_moved');
      if (error instanceof BadResultsCursor) throw badRequest(error.message, 'after');
      throw error;
    }
  });

  api.get('/x/batches/:id/usage', async (c) => {
    const batch = await batchOf(c);
    const cost = batchCost(batch, batch.model ? deps.prices?.(batch.model) : undefined);
    return c.json({
      object: 'batch.usage',
      batch_id: batch.id,
      model: batch.model,
      status: batch.status,
      request_counts: { total: batch.total, completed: batch.completed, failed: batch.failed },
      input_tokens: batch.usage.inputTokens,
      cached_input_tokens: batch.usage.cachedTokens,
      output_tokens: batch.usage.outputTokens,
      reasoning_tokens: batch.usage.reasoningTokens,
      total_tokens: batch.usage.totalTokens,
      cost: cost && {
        currency: cost.currency,
        input: cost.input,
        cached_input: cost.cachedInput,
        output: cost.output,
        total: cost.total,
      },
    });
  });
}
