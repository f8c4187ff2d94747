// OpenAI's Uploads API over HTTP: the routes, their schemas and the Upload object of the wire. What
// an upload may do is the Uploads domain's (shared/uploads/); this reads the request, calls it, and
// answers its refusals with their statuses and codes.
//
//   POST /uploads                 {filename, purpose, bytes, mime_type, expires_after?} → Upload (pending)
//   POST /uploads/{id}/parts      multipart field `data`, at most 64 MB          → UploadPart
//   POST /uploads/{id}/complete   {part_ids, md5?}                               → Upload (completed, with file)
//   POST /uploads/{id}/cancel                                                    → Upload (cancelled)
//
// Another project's upload answers 404, like a missing one.

import type { Context, Handler, Hono } from 'hono';
import { z } from 'zod';
import type { FileRecord, UploadRecord } from '../batch/model.js';
import { filenameProblem } from '../filenames.js';
import { isIdOf } from '../ids.js';
import { BatchFileCheck, type UploadProblem } from '../input/upload-check.js';
import { addUploadPart } from '../uploads/add-part.js';
import { completeUpload } from '../uploads/complete.js';
import { cancelUpload, createUpload } from '../uploads/create.js';
import {
  UploadFileRefused,
  UploadMd5Mismatch,
  UploadNotPending,
  UploadOverAnnounced,
  UploadPartEmpty,
  UploadPartsRefused,
  UploadPartTooLarge,
  UploadRefusal,
  UploadSizeMismatch,
  UploadSizeRefused,
  UploadStillCompleting,
} from '../uploads/errors.js';
import { checkLimits, effectiveStatus, type UploadDeps, type UploadLimits } from '../uploads/model.js';
import { deadlineOf } from './deadline.js';
import { ApiError, badRequest, notFound, quoted, tooLarge, unavailable } from './errors.js';
import { receiveMultipart, type StreamCheck } from './multipart.js';
import { toFileObject } from './objects.js';
import { DEFAULT_MAX_JSON_BODY_BYTES, jsonBody, jsonBodyLimit, parse } from './request.js';
import { fileExpiresAfter } from './schemas.js';

export type { UploadDeps };

export interface UploadRouteDeps extends UploadDeps {
  limits: UploadLimits & { maxJsonBodyBytes?: number };
}

type Env = { Variables: { project: string; requestId: string } };

const COMPLETE_RETRY_AFTER_SECONDS = 5;

const fileRefused = (problem: UploadProblem) =>
  new ApiError(problem.status, problem.message, 'invalid_request_error', 'file', problem.code);

/** The checks of a batch input file while it streams in (upload-check.ts), as API errors. */
export function batchFileCheck(limits: UploadLimits): StreamCheck & { requests(): number; model(): string | undefined } {
  const check = new BatchFileCheck(checkLimits(limits));
  const asError = (problem: UploadProblem | undefined) => problem && fileRefused(problem);
  return {
    push: (chunk) => asError(check.push(chunk)),
    end: () => asError(check.end()),
    requests: () => check.requestCount,
    model: () => check.firstModel,
  };
}

/** A refusal of the Uploads domain as the answer a client gets. */
function answerFor(refusal: UploadRefusal): ApiError {
  const { message } = refusal;
  if (refusal instanceof UploadNotPending) {
    return badRequest(message, null, refusal.upload.status === 'expired' ? 'upload_expired' : 'upload_not_pending');
  }
  if (refusal instanceof UploadSizeRefused)
    return refusal.bytes === 0 ? badRequest(message, 'bytes', 'empty_file') : tooLarge(message, 'bytes');
  if (refusal instanceof UploadOverAnnounced) return badRequest(message, 'data', 'upload_size_exceeded');
  if (refusal instanceof UploadPartTooLarge) return tooLarge(message, 'data');
  if (refusal instanceof UploadPartEmpty) return badRequest(message, 'data');
  if (refusal instanceof UploadPartsRefused) return badRequest(message, 'part_ids');
  if (refusal instanceof UploadSizeMismatch) return badRequest(message, 'part_ids', 'upload_size_mismatch');
  if (refusal instanceof UploadMd5Mismatch) return badRequest(message, 'md5', 'md5_mismatch');
  if (refusal instanceof UploadFileRefused) return fileRefused(refusal.problem);
  if (refusal instanceof UploadStillCompleting) return unavailable(message, 'upload_completing', COMPLETE_RETRY_AFTER_SECONDS);
  return badRequest(message);
}

/** The route, with the domain's refusals answered as API errors. */
function answering(handler: Handler<Env>): Handler<Env> {
  return async (c, next) => {
    try {
      return await handler(c, next);
    } catch (error) {
      throw error instanceof UploadRefusal ? answerFor(error) : error;
    }
  };
}

const createUploadSchema = z.object({
  filename: z.string({ error: 'filename is required and must be a string' }).min(1, 'filename must not be empty'),
  purpose: z.string({ error: "purpose is required; use 'batch' for Batch API input files" }),
  bytes: z
    .number({ error: 'bytes is required and must be a number' })
    .int('bytes must be a whole number')
    .min(0, 'bytes must not be negative'),
  mime_type: z
    .string({ error: 'mime_type is required and must be a string, e.g. application/jsonl' })
    .min(1, 'mime_type must not be empty')
    .max(255, 'mime_type must be at most 255 characters'),
  expires_after: fileExpiresAfter.optional(),
});

const completeUploadSchema = z.object({
  part_ids: z
    .array(z.string({ error: 'part_ids must be strings' }), { error: 'part_ids is required: the ids of the parts, in order' })
    .min(1, 'part_ids must name at least one part'),
  md5: z
    .string({ error: 'md5 must be a string' })
    .regex(/^[0-9a-fA-F]{32}$/, 'md5 must be 32 hexadecimal digits')
    .optional(),
});

/** The Upload object of the wire (SPEC `Upload`). */
export function toUploadObject(upload: UploadRecord, file: FileRecord | undefined, nowMs: number) {
  return {
    id: upload.id,
    object: 'upload' as const,
    bytes: upload.bytes,
    created_at: Math.floor(upload.createdAtMs / 1000),
    expires_at: Math.floor(upload.expiresAtMs / 1000),
    filename: upload.filename,
    purpose: upload.purpose,
    status: effectiveStatus(upload, nowMs),
    file: file ? toFileObject(file) : null,
  };
}

export function registerUploadRoutes(api: Hono<Env>, deps: UploadRouteDeps): void {
  const { meta, clock } = deps;
  const jsonLimit = jsonBodyLimit(deps.limits.maxJsonBodyBytes ?? DEFAULT_MAX_JSON_BODY_BYTES);

  async function uploadOf(c: Context<Env>): Promise<UploadRecord> {
    const id = c.req.param('id')!;
    // An id that cannot be ours names nothing: no need to ask the store.
    const upload = isIdOf('upload', id) ? await meta.getUpload(c.get('project'), id) : undefined;
    if (!upload) throw notFound('upload', id);
    return upload;
  }

  async function respond(c: Context<Env>, upload: UploadRecord) {
    const file = upload.fileId ? await meta.getFile(upload.project, upload.fileId) : undefined;
    return c.json(toUploadObject(upload, file, clock.now()));
  }

  api.post(
    '/uploads',
    jsonLimit,
    answering(async (c) => {
      const body = parse(createUploadSchema, await jsonBody(c));
      const filenameRefused = filenameProblem(body.filename);
      if (filenameRefused) throw badRequest(`The filename is refused: ${filenameRefused}.`, 'filename', 'invalid_filename');
      if (body.purpose !== 'batch') {
        throw badRequest(`This service stores Batch API input files: purpose must be 'batch', not '${quoted(body.purpose)}'.`, 'purpose');
      }
      const upload = await createUpload(deps, {
        project: c.get('project'),
        filename: body.filename,
        bytes: body.bytes,
        mimeType: body.mime_type,
        fileExpiresAfterSeconds: body.expires_after?.seconds ?? null,
      });
      return c.json(toUploadObject(upload, undefined, upload.createdAtMs));
    }),
  );

  api.post(
    '/uploads/:id/parts',
    answering(async (c) => {
      const part = await addUploadPart(deps, await uploadOf(c), async (maxFileBytes, store) => {
        const form = await receiveMultipart(c.req.raw, { fileField: 'data', maxFileBytes, store });
        if (!form.file) throw badRequest("The 'data' part is missing: send the part's bytes as the multipart field 'data'.", 'data');
        return form.file;
      });
      return c.json({
        id: part.id,
        object: 'upload.part' as const,
        created_at: Math.floor(part.createdAtMs / 1000),
        upload_id: part.uploadId,
      });
    }),
  );

  api.post(
    '/uploads/:id/complete',
    jsonLimit,
    answering(async (c) => {
      const body = parse(completeUploadSchema, await jsonBody(c));
      // An id that cannot be a part's names none of this upload's parts, whatever the store holds.
      const notAPart = body.part_ids.find((id) => !isIdOf('part', id));
      if (notAPart !== undefined) throw badRequest(`'${quoted(notAPart)}' is not a part id (part_…).`, 'part_ids');
      const request = { partIds: body.part_ids, md5: body.md5 };
      return respond(c, await completeUpload(deps, await uploadOf(c), request, { deadline: deadlineOf(c) }));
    }),
  );

  api.post(
    '/uploads/:id/cancel',
    answering(async (c) => respond(c, await cancelUpload(deps, await uploadOf(c)))),
  );
}
