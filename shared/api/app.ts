// The OpenAI-compatible HTTP surface, as a Hono app: a function from a web Request to a web
// Response, hosted by the local server (local/) and, in AWS, by the API Lambda. Routes are the
// same under every dialect's base path (shared/api/dialects: OpenAI /v1, Zhipu /v4, DashScope
// /compatible-mode/v1, Melious /melious/v1); the dialect maps names and shapes. Cross-cutting
// concerns (request ids, keys, the error envelope) are middleware, so each route reads as what it does.

import { Readable } from 'node:stream';
import { type Context, Hono } from 'hono';
import { z } from 'zod';
import { BatchNotCancellable, cancelBatch } from '../batch/cancel.js';
import { BatchOverQuota, createBatch, InputFileNotForBatch, InputFileNotFound, WindowCannotBeMet } from '../batch/create.js';
import { fileRecord } from '../batch/files.js';
import { blobKeys } from '../batch/keys.js';
import type { BatchRecord, FileRecord } from '../batch/model.js';
import { parseCompletionWindow } from '../batch/rules.js';
import { attachmentDisposition, filenameProblem } from '../filenames.js';
import { isIdOf, newFileId, randomToken } from '../ids.js';
import { normalizeEndpoint } from '../input/validate.js';
import { errorMessage, type Logger } from '../log.js';
import type { BlobStore, Clock, Lifecycle, MetaStore } from '../ports.js';
import { withEstimates } from '../schedule/eta.js';
import type { QuotaConfig } from '../schedule/quota.js';
import type { RoutePrice } from '../upstream/routes.js';
import type { ApiKeyResolver } from './api-keys.js';
import { registerConsoleRoutes } from './console.js';
import { routeDeadline } from './deadline.js';
import { type AuthErrorCode, DIALECTS, type Dialect, dialectOf } from './dialects/index.js';
import { ApiError, badRequest, conflict, internalError, notFound, quoted, tooLarge } from './errors.js';
import { registerExtensionRoutes } from './extensions.js';
import { receiveMultipart } from './multipart.js';
import { listObject, toFileObject } from './objects.js';
import { type PipelineApiDeps, registerPipelineRoutes } from './pipelines.js';
import { DEFAULT_MAX_JSON_BODY_BYTES, jsonBody, jsonBodyLimit, parse } from './request.js';
import { createBatchSchema, fileExpiresAfter, listBatchesQuery, listFilesQuery, requestedPriority, runAnyway } from './schemas.js';
import { checkSignedToken, isJwt, type SigningSecretLookup } from './signed-tokens.js';
import { batchFileCheck, registerUploadRoutes, type UploadDeps } from './uploads.js';
import { registerWebhookRoutes, type WebhookApiDeps } from './webhooks.js';

export interface ApiDeps extends Pick<UploadDeps, 'completeLeaseMs' | 'completeWaitMs' | 'handOffComplete'> {
  meta: MetaStore;
  /** Quotas a create checks a batch against (shared/schedule/quota.ts). */
  quotaConfig?: QuotaConfig;
  /** The route that serves a model, for its quotas at create. */
  routeOf?: (model: string) => string | undefined;
  blobs: BlobStore;
  lifecycle: Lifecycle;
  clock: Clock;
  log: Logger;
  /** Bearer key → project; undefined (with no resolveApiKey either) runs open as the project `default`. */
  apiKeys: Map<string, string> | undefined;
  /** Looks up keys the map does not hold (in AWS: hashed keys in the MetaStore). */
  resolveApiKey?: ApiKeyResolver;
  /** The secrets of `id.secret` keys, to verify Zhipu's signed tokens; unset: a token is looked up as a key. */
  signingSecrets?: SigningSecretLookup;
  /**
   * Downloads of files larger than `redirectAboveBytes` answer 307 to a short-lived presigned URL,
   * where the BlobStore can presign (in AWS, where a Lambda's answer is capped at 6 MB). Unset:
   * every download streams.
   */
  downloads?: { redirectAboveBytes: number; urlExpiresInSeconds: number };
  limits: {
    maxFileBytes: number;
    minCompletionWindowMs: number;
    maxCompletionWindowMs: number;
    /** Checked while a batch file uploads (files over them are refused at once); unset: not checked there. */
    maxLineBytes?: number;
    maxRequestsPerBatch?: number;
    /** The largest JSON body a route reads; default DEFAULT_MAX_JSON_BODY_BYTES (1 MB). */
    maxJsonBodyBytes?: number;
  };
  /** Answers whether the service can take work (for /healthz). */
  ready?: () => Promise<boolean>;
  /** Counts /healthz shows beside its status (npm start: errors its last line of defence caught). */
  healthDetails?: () => Record<string, number>;
  /** Told after each status change the API makes (a cancel), so that its event goes out soon. */
  onTransition?: (batch: BatchRecord) => void;
  /** The price of the route that serves a model, when it has one (GET /v1/x/batches/{id}/usage). */
  prices?: (model: string) => RoutePrice | undefined;
  /** The webhook endpoints API (shared/api/webhooks.ts); unset, its routes answer 404. */
  webhooks?: WebhookApiDeps['webhooks'];
  /** API_ROUTE_DEADLINE: a route still running this long answers 503 request_timeout (shared/api/deadline.ts); unset: none. */
  routeDeadlineMs?: number;
  /** Pipelines (shared/api/pipelines.ts); unset, their routes answer 404. */
  pipelines?: PipelineApiDeps['pipelines'];
}

type Env = { Variables: { project: string; requestId: string } };

export function createApiApp(deps: ApiDeps): Hono<Env> {
  const { meta, blobs, clock } = deps;
  const app = new Hono<Env>();

  app.use('*', async (c, next) => {
    const requestId = `req_${randomToken(20)}`;
    c.set('requestId', requestId);
    await next();
    c.header('x-request-id', requestId);
  });

  app.onError((error, c) => {
    const apiError = error instanceof ApiError ? error : undefined;
    if (!apiError) deps.log.log('error', 'request failed', { requestId: c.get('requestId'), path: c.req.path, error: errorMessage(error) });
    const shown = apiError ?? internalError();
    return c.json(shown.toBody(), shown.status, shown.headers);
  });

  app.notFound((c) => {
    const error = new ApiError(404, `Unknown request URL: ${c.req.method} ${c.req.path}.`, 'invalid_request_error', null, 'unknown_url');
    return c.json(error.toBody(), 404);
  });

  app.get('/healthz', async (c) => {
    const ready = deps.ready ? await deps.ready().catch(() => false) : true;
    return c.json({ status: ready ? 'ok' : 'unavailable', ...deps.healthDetails?.() }, ready ? 200 : 503);
  });

  registerConsoleRoutes(app);

  const api = new Hono<Env>();
  const jsonLimit = jsonBodyLimit(deps.limits.maxJsonBodyBytes ?? DEFAULT_MAX_JSON_BODY_BYTES);

  api.use('*', routeDeadline({ deadlineMs: deps.routeDeadlineMs, log: deps.log }));
  api.use('*', async (c, next) => {
    const project = await authenticate(deps, c.req.header('authorization'), dialectOf(c.req.path));
    c.set('project', project);
    await next();
  });

  // ---- Files ----

  api.post('/files', async (c) => {
    const project = c.get('project');
    const id = newFileId();
    const blobKey = blobKeys.file(id);
    let check: ReturnType<typeof batchFileCheck> | undefined;
    try {
      const form = await receiveMultipart(c.req.raw, {
        fileField: 'file',
        maxFileBytes: deps.limits.maxFileBytes,
        store: (body) => blobs.put(blobKey, body),
        check: () => {
          check = batchFileCheck(deps.limits);
          return check;
        },
        checkFilename: (filename) => {
          const problem = filenameProblem(filename);
          return problem === undefined ? undefined : badRequest(`The file's name is refused: ${problem}.`, 'file', 'invalid_filename');
        },
      });
      if (!form.file) throw badRequest("The 'file' part is missing: send the JSONL file as the multipart field 'file'.", 'file');
      if (form.file.truncated) {
        throw tooLarge(`The file is larger than the ${deps.limits.maxFileBytes} bytes this service accepts (MAX_FILE_BYTES).`, 'file');
      }
      const purpose = form.fields.purpose;
      if (purpose === undefined) throw badRequest("'purpose' is required; use 'batch' for Batch API input files.", 'purpose');
      if (purpose !== 'batch')
        throw badRequest(`This service stores Batch API input files: purpose must be 'batch', not '${quoted(purpose)}'.`, 'purpose');
      if (form.file.bytes === 0) throw badRequest('The file is empty.', 'file', 'empty_file');
      const expiresAfterSeconds = parseFormExpiry(form.fields);
      const file = fileRecord(
        {
          id,
          project,
          filename: form.file.filename,
          purpose,
          bytes: form.file.bytes,
          expiresAfterSeconds: expiresAfterSeconds ?? null,
          ...(check ? { requests: check.requests() } : {}),
          ...(check?.model() !== undefined ? { model: check.model() } : {}),
        },
        clock.now(),
      );
      await meta.putFile(file);
      return c.json(toFileObject(file));
    } catch (error) {
      await blobs.delete([blobKey]).catch(() => undefined);
      throw error;
    }
  });

  api.get('/files', async (c) => {
    const query = parse(listFilesQuery, c.req.query());
    // A cursor that cannot be ours names no object of this project: the empty page any such cursor gets.
    if (query.after !== undefined && !isIdOf('file', query.after)) return c.json(listObject([], false));
    const page = await meta.listFiles(c.get('project'), query);
    return c.json(listObject(page.items.map(toFileObject), page.hasMore));
  });

  api.get('/files/:id', async (c) => c.json(toFileObject(await fileOf(c))));

  api.delete('/files/:id', async (c) => {
    const id = ourId(c, 'file');
    const deleted = await meta.deleteFile(c.get('project'), id);
    if (!deleted) throw notFound('file', id);
    // An unfinished batch still reads it: the bytes go when its last batch ends (releaseInputFile).
    if (!deleted.blobInUse) await blobs.delete([deleted.file.blobKey]);
    return c.json({ id: deleted.file.id, object: 'file', deleted: true });
  });

  api.get('/files/:id/content', async (c) => {
    const file = await fileOf(c);
    if (deps.downloads && blobs.presignGet && file.bytes > deps.downloads.redirectAboveBytes) {
      // fetch and httpx follow it, and drop the Authorization header on the way to another origin.
      const url = await blobs.presignGet(file.blobKey, { expiresInSeconds: deps.downloads.urlExpiresInSeconds, filename: file.filename });
      return c.redirect(url, 307);
    }
    const body = Readable.toWeb(Readable.from(await blobs.get(file.blobKey))) as unknown as ReadableStream;
    return new Response(body, {
      headers: {
        'content-type': 'application/octet-stream',
        'content-length': String(file.bytes),
        'content-disposition': attachmentDisposition(file.filename),
      },
    });
  });

  // ---- Batches ----

  api.post('/batches', jsonLimit, async (c) => {
    const project = c.get('project');
    const raw = await jsonBody(c);
    const body = parse(createBatchSchema, raw);
    const dialect = dialectOf(c.req.path);
    if (!dialect.endpoints.includes(normalizeEndpoint(body.endpoint))) {
      throw badRequest(
        `endpoint must be one of ${dialect.endpoints.join(', ')} (or the same under /v4), not '${quoted(body.endpoint)}'.`,
        'endpoint',
      );
    }
    const options = dialect.createOptions(raw as Record<string, unknown>);
    const windowMs = completionWindowMs(body.completion_window, deps.limits);
    try {
      const batch = await createBatch(deps, {
        project,
        inputFileId: body.input_file_id,
        endpoint: body.endpoint,
        completionWindow: body.completion_window,
        windowMs,
        metadata: body.metadata ?? null,
        outputExpiresAfterSeconds: body.output_expires_after?.seconds ?? null,
        priority: requestedPriority(body),
        runAnyway: runAnyway(body),
        ...options,
      });
      return c.json(dialect.batchObject(batch));
    } catch (error) {
      if (error instanceof InputFileNotFound) throw notFound('file', body.input_file_id, 'input_file_id');
      if (error instanceof InputFileNotForBatch) throw badRequest(error.message, 'input_file_id');
      if (error instanceof BatchOverQuota) throw badRequest(error.message, 'input_file_id', 'quota_exceeded');
      if (error instanceof WindowCannotBeMet) throw badRequest(error.message, 'completion_window', 'window_cannot_be_met');
      throw error;
    }
  });

  api.get('/batches', async (c) => {
    const query = parse(listBatchesQuery, c.req.query());
    if (query.after !== undefined && !isIdOf('batch', query.after)) return c.json(listObject([], false));
    const dialect = dialectOf(c.req.path);
    const filter = dialect.listFilter(c.req.query());
    const page = await meta.listBatches(c.get('project'), { ...query, ...(filter ? { filter } : {}) });
    const items = await withEstimates(deps, c.get('project'), page.items);
    return c.json(listObject(items.map(dialect.batchObject), page.hasMore));
  });

  api.get('/batches/:id', async (c) => {
    const [batch] = await withEstimates(deps, c.get('project'), [await batchOf(c)]);
    return c.json(dialectOf(c.req.path).batchObject(batch!));
  });

  api.post('/batches/:id/cancel', async (c) => {
    try {
      return c.json(dialectOf(c.req.path).batchObject(await cancelBatch(deps, await batchOf(c))));
    } catch (error) {
      if (error instanceof BatchNotCancellable) throw conflict(error.message, 'batch_not_cancellable');
      throw error;
    }
  });

  registerUploadRoutes(api, deps);
  registerExtensionRoutes(api, deps);
  if (deps.webhooks) registerWebhookRoutes(api, { ...deps, webhooks: deps.webhooks });
  if (deps.pipelines) registerPipelineRoutes(api, { ...deps, pipelines: deps.pipelines });
  // Each dialect's base paths reach the same routes; the dialect they came by maps the answers.
  for (const base of DIALECTS.flatMap((dialect) => dialect.basePaths)) app.route(base, api);

  /** The route's id, or 404 at once for one that cannot be ours (storage is not asked). */
  function ourId(c: Context<Env>, kind: 'file' | 'batch'): string {
    const id = c.req.param('id')!;
    if (!isIdOf(kind, id)) throw notFound(kind, id);
    return id;
  }

  async function fileOf(c: Context<Env>): Promise<FileRecord> {
    const id = ourId(c, 'file');
    const file = await meta.getFile(c.get('project'), id);
    if (!file) throw notFound('file', id);
    return file;
  }

  async function batchOf(c: Context<Env>): Promise<BatchRecord> {
    const id = ourId(c, 'batch');
    const batch = await meta.getBatch(id);
    // Another project's batch answers exactly like a missing one.
    if (!batch || batch.project !== c.get('project')) throw notFound('batch', id);
    return batch;
  }

  return app;
}

export const OPEN_PROJECT = 'default';

async function authenticate(
  deps: Pick<ApiDeps, 'apiKeys' | 'resolveApiKey' | 'signingSecrets' | 'clock'>,
  header: string | undefined,
  dialect: Dialect,
): Promise<string> {
  const { apiKeys, resolveApiKey } = deps;
  if (!apiKeys && !resolveApiKey) return OPEN_PROJECT;
  const refuse = (message: string, code: AuthErrorCode) =>
    new ApiError(401, message, 'invalid_request_error', null, dialect.authErrorCode?.(code) ?? code);
  const credential = /^Bearer\s+(.+)$/i.exec(header ?? '')?.[1]?.trim();
  if (!credential) throw refuse("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.", 'missing_api_key');
  let key = credential;
  // A key of API_KEYS is itself even when it is shaped like a token.
  if (deps.signingSecrets && isJwt(credential) && !apiKeys?.has(credential)) {
    // Zhipu's signed token stands for the key it was signed with.
    const check = await checkSignedToken(credential, deps.signingSecrets, deps.clock.now());
    if (!check.ok && check.problem === 'expired') throw refuse('The signed token has expired; sign a new one.', 'token_expired');
    if (!check.ok)
      throw refuse('The signed token is not valid: its signature, its algorithm (HS256) or its api_key is wrong.', 'invalid_token');
    key = check.key;
  }
  const project = apiKeys?.get(key) ?? (await resolveApiKey?.(key));
  if (!project) throw refuse('Incorrect API key provided.', 'invalid_api_key');
  return project;
}

function parseFormExpiry(fields: Record<string, string>): number | undefined {
  const anchor = fields['expires_after[anchor]'];
  const seconds = fields['expires_after[seconds]'];
  if (anchor === undefined && seconds === undefined) return undefined;
  return parse(z.object({ expires_after: fileExpiresAfter }), { expires_after: { anchor, seconds } }).expires_after.seconds;
}

function completionWindowMs(window: string, limits: ApiDeps['limits']): number {
  const ms = parseCompletionWindow(window);
  if (ms === undefined) {
    throw badRequest(
      `completion_window must be written <N>h, such as '24h' (or <N>m / <N>s under an hour), not '${quoted(window)}'.`,
      'completion_window',
    );
  }
  if (ms < limits.minCompletionWindowMs || ms > limits.maxCompletionWindowMs) {
    throw badRequest(
      `completion_window must be between ${formatHours(limits.minCompletionWindowMs)} and ${formatHours(limits.maxCompletionWindowMs)}, not '${quoted(window)}'.`,
      'completion_window',
    );
  }
  return ms;
}

function formatHours(ms: number): string {
  return ms % 3_600_000 === 0 ? `${ms / 3_600_000}h` : `${ms / 1000}s`;
}
