// OpenAI's Uploads API: a large file sent in parts (each streamed to the BlobStore and scanned on
// the way into a small summary), joined in the order the client names on complete into the same
// File object /v1/files makes. Locally and in AWS alike. Complete checks the batch file from the
// parts' summaries and its first request line, and joins the parts (in parallel on S3), so its
// cost is mostly metadata even for gigabytes; an md5, when given, is one more read of the parts.
//
//   POST /uploads                 {filename, purpose, bytes, mime_type, expires_after?} → Upload (pending)
//   POST /uploads/{id}/parts      multipart field `data`, at most 64 MB          → UploadPart
//   POST /uploads/{id}/complete   {part_ids, md5?}                               → Upload (completed, with file)
//   POST /uploads/{id}/cancel                                                    → Upload (cancelled)
//
// An upload expires an hour after it is created; parts cannot be added once it is completed,
// cancelled or expired. Another project's upload answers 404, like a missing one.

import { createHash } from 'node:crypto';
import type { Context, Hono } from 'hono';
import { z } from 'zod';
import { blobKeys } from '../batch/keys.js';
import type { FileRecord, UploadPartRecord, UploadRecord } from '../batch/model.js';
import { filenameProblem } from '../filenames.js';
import { isIdOf, newUploadId, newUploadPartId } from '../ids.js';
import {
  BatchFileCheck,
  checkJoinedParts,
  PartScan,
  type SummarizedPart,
  summaryFits,
  type UploadCheckLimits,
  type UploadProblem,
} from '../input/upload-check.js';
import type { BlobStore, Clock, MetaStore } from '../ports.js';
import { ApiError, badRequest, notFound, quoted, tooLarge, unavailable } from './errors.js';
import { receiveMultipart, type StreamCheck } from './multipart.js';
import { toFileObject } from './objects.js';
import { DEFAULT_MAX_JSON_BODY_BYTES, jsonBody, jsonBodyLimit, parse } from './request.js';
import { fileExpiresAfter } from './schemas.js';

export interface UploadDeps {
  meta: MetaStore;
  blobs: BlobStore;
  clock: Clock;
  limits: { maxFileBytes: number; maxLineBytes?: number; maxRequestsPerBatch?: number; maxJsonBodyBytes?: number };
  /**
   * How long a complete may hold its claim on an upload while it joins the parts: at least as long
   * as one request can run (in AWS, the API Lambda's timeout), so that a claim runs out only once
   * its claimant is surely gone. Default DEFAULT_COMPLETE_LEASE_MS.
   */
  completeLeaseMs?: number;
  /**
   * How long a complete waits for another complete's join before answering 503: well under API
   * Gateway's 30 s, so the client gets that answer rather than the gateway's. Default DEFAULT_COMPLETE_WAIT_MS.
   */
  completeWaitMs?: number;
}

type Env = { Variables: { project: string; requestId: string } };

/** An upload takes parts for an hour after its creation. */
export const UPLOAD_LIFETIME_MS = 3_600_000;
/** The most bytes one part may carry (OpenAI's limit). */
export const MAX_PART_BYTES = 64 * 1024 * 1024;
/** The most bytes an upload may announce (OpenAI's limit; MAX_FILE_BYTES applies as well). */
export const MAX_UPLOAD_BYTES = 8 * 1024 * 1024 * 1024;
const BATCH_FILE_RETENTION_SECONDS = 30 * 24 * 3600;
/** Part records looked up at once on complete. */
const PART_LOOKUPS_IN_FLIGHT = 32;
/** Locally no gateway cuts a request short; a claim lasts long enough for the largest join. */
export const DEFAULT_COMPLETE_LEASE_MS = 5 * 60_000;
export const DEFAULT_COMPLETE_WAIT_MS = 20_000;
/** A waiting complete reads the upload this often. */
const COMPLETE_POLL_MS = 500;
const COMPLETE_RETRY_AFTER_SECONDS = 5;

export const uploadKeys = {
  parts: (uploadId: string) => `uploads/${uploadId}/`,
  part: (uploadId: string, partId: string) => `uploads/${uploadId}/${partId}`,
};

function checkLimits(limits: UploadDeps['limits']): UploadCheckLimits {
  return {
    maxLineBytes: limits.maxLineBytes ?? Number.POSITIVE_INFINITY,
    maxRequests: limits.maxRequestsPerBatch ?? Number.POSITIVE_INFINITY,
  };
}

const fileRefused = (problem: UploadProblem) =>
  new ApiError(problem.status, problem.message, 'invalid_request_error', 'file', problem.code);

/** The checks of a batch input file while it streams in (upload-check.ts), as API errors. */
export function batchFileCheck(limits: UploadDeps['limits']): StreamCheck {
  const check = new BatchFileCheck(checkLimits(limits));
  const asError = (problem: UploadProblem | undefined) => problem && fileRefused(problem);
  return { push: (chunk) => asError(check.push(chunk)), end: () => asError(check.end()) };
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

function effectiveStatus(upload: UploadRecord, nowMs: number): UploadRecord['status'] {
  return upload.status === 'pending' && nowMs >= upload.expiresAtMs ? 'expired' : upload.status;
}

/** The file id of an upload's File: the same on every try, so a repeated complete makes one file. */
function uploadFileId(uploadId: string): string {
  const digest = createHash('sha256').update(`upload:${uploadId}`).digest('base64url').replace(/[-_]/g, '');
  return `file-${digest.slice(0, 24)}`;
}

type CompleteBody = z.infer<typeof completeUploadSchema>;

/** 400: the parts would add up to more than the upload may hold. */
function overAnnounced(upload: UploadRecord, limit: number): ApiError {
  const what =
    limit < upload.bytes
      ? `the ${limit} bytes this service accepts for a file (MAX_FILE_BYTES)`
      : `the ${upload.bytes} bytes the upload was created for`;
  return badRequest(`This part would take the parts of upload ${upload.id} past ${what}.`, 'data', 'upload_size_exceeded');
}

export function registerUploadRoutes(api: Hono<Env>, deps: UploadDeps): void {
  const { meta, blobs, clock } = deps;
  const leaseMs = deps.completeLeaseMs ?? DEFAULT_COMPLETE_LEASE_MS;
  const waitMs = deps.completeWaitMs ?? DEFAULT_COMPLETE_WAIT_MS;
  const jsonLimit = jsonBodyLimit(deps.limits.maxJsonBodyBytes ?? DEFAULT_MAX_JSON_BODY_BYTES);

  async function uploadOf(c: Context<Env>): Promise<UploadRecord> {
    const id = c.req.param('id')!;
    // An id that cannot be ours names nothing: no need to ask the store.
    const upload = isIdOf('upload', id) ? await meta.getUpload(c.get('project'), id) : undefined;
    if (!upload) throw notFound('upload', id);
    return upload;
  }

  /** A pending upload that has outlived its hour is recorded as expired. */
  async function expireIfDue(upload: UploadRecord): Promise<UploadRecord> {
    if (effectiveStatus(upload, clock.now()) !== 'expired' || upload.status === 'expired') return upload;
    const expired = await meta.updateUpload(upload.id, ['pending'], { status: 'expired' });
    if (expired) await deleteParts(upload.id);
    return expired ?? (await meta.getUpload(upload.project, upload.id)) ?? upload;
  }

  async function deleteParts(uploadId: string): Promise<void> {
    await blobs.delete(await blobs.list(uploadKeys.parts(uploadId))).catch(() => undefined);
  }

  /** The bytes [start, end) of the parts joined in order. */
  async function* readParts(parts: readonly UploadPartRecord[], start: number, end: number): AsyncGenerator<Uint8Array> {
    let at = 0;
    for (const part of parts) {
      if (at >= end) return;
      const from = Math.max(start - at, 0);
      const to = Math.min(end - at, part.bytes);
      if (from < to) yield* await blobs.get(part.blobKey, { start: from, end: to });
      at += part.bytes;
    }
  }

  async function md5Of(parts: readonly UploadPartRecord[], signal: AbortSignal): Promise<string> {
    const md5 = createHash('md5');
    for (const part of parts) {
      for await (const piece of await blobs.get(part.blobKey)) {
        signal.throwIfAborted();
        md5.update(piece);
      }
    }
    return md5.digest('hex');
  }

  /**
   * The part with its summary under these limits: the one stored as it arrived, or, for a part
   * stored by older code or under another MAX_LINE_BYTES, one made now by reading the part.
   */
  async function withSummary(part: UploadPartRecord, limits: UploadCheckLimits): Promise<SummarizedPart> {
    if (summaryFits(part.summary, limits)) return { bytes: part.bytes, summary: part.summary };
    const scan = new PartScan(limits);
    for await (const piece of await blobs.get(part.blobKey)) scan.push(piece);
    return { bytes: part.bytes, summary: scan.end() };
  }

  function notPending(upload: UploadRecord, doing: string): ApiError {
    const when =
      upload.status === 'expired'
        ? `expired at ${new Date(upload.expiresAtMs).toISOString()} (an upload lasts an hour)`
        : `already ${upload.status}`;
    return badRequest(
      `Upload ${upload.id} is ${when}: ${doing}.`,
      null,
      upload.status === 'expired' ? 'upload_expired' : 'upload_not_pending',
    );
  }

  async function respond(c: Context<Env>, upload: UploadRecord) {
    const file = upload.fileId ? await meta.getFile(upload.project, upload.fileId) : undefined;
    return c.json(toUploadObject(upload, file, clock.now()));
  }

  api.post('/uploads', jsonLimit, async (c) => {
    const body = parse(createUploadSchema, await jsonBody(c));
    const filenameRefused = filenameProblem(body.filename);
    if (filenameRefused) throw badRequest(`The filename is refused: ${filenameRefused}.`, 'filename', 'invalid_filename');
    if (body.purpose !== 'batch') {
      throw badRequest(`This service stores Batch API input files: purpose must be 'batch', not '${quoted(body.purpose)}'.`, 'purpose');
    }
    if (body.bytes === 0) throw badRequest('bytes is 0: a batch input file needs at least one request.', 'bytes', 'empty_file');
    const limit = Math.min(deps.limits.maxFileBytes, MAX_UPLOAD_BYTES);
    if (body.bytes > limit) {
      throw tooLarge(
        `The upload announces ${body.bytes} bytes; this service accepts files of at most ${limit} bytes (MAX_FILE_BYTES).`,
        'bytes',
      );
    }
    const now = clock.now();
    const upload: UploadRecord = {
      id: newUploadId(),
      project: c.get('project'),
      filename: body.filename,
      purpose: 'batch',
      bytes: body.bytes,
      mimeType: body.mime_type,
      status: 'pending',
      createdAtMs: now,
      expiresAtMs: now + UPLOAD_LIFETIME_MS,
      fileExpiresAfterSeconds: body.expires_after?.seconds ?? null,
      fileId: null,
    };
    await meta.createUpload(upload);
    return c.json(toUploadObject(upload, undefined, now));
  });

  api.post('/uploads/:id/parts', async (c) => {
    let upload = await expireIfDue(await uploadOf(c));
    if (upload.status !== 'pending') throw notPending(upload, 'parts can no longer be added');
    // The parts together may hold what the upload announced, and never more than a file may be.
    const limit = Math.min(upload.bytes, deps.limits.maxFileBytes);
    const room = limit - (upload.partBytes ?? 0);
    if (room <= 0) throw overAnnounced(upload, limit);
    const cap = Math.min(MAX_PART_BYTES, room);
    const partId = newUploadPartId();
    const blobKey = uploadKeys.part(upload.id, partId);
    const scan = new PartScan(checkLimits(deps.limits));
    async function* scanned(body: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
      for await (const chunk of body) {
        scan.push(chunk);
        yield chunk;
      }
    }
    let counted = 0;
    try {
      const form = await receiveMultipart(c.req.raw, {
        fileField: 'data',
        maxFileBytes: cap,
        store: (body) => blobs.put(blobKey, scanned(body)),
      });
      if (!form.file) throw badRequest("The 'data' part is missing: send the part's bytes as the multipart field 'data'.", 'data');
      if (form.file.truncated) {
        if (cap < MAX_PART_BYTES) throw overAnnounced(upload, limit);
        throw tooLarge(`A part may be at most ${MAX_PART_BYTES} bytes (64 MB); split the file into more parts.`, 'data');
      }
      if (form.file.bytes === 0) throw badRequest('The part is empty.', 'data');
      // It may have been completed, cancelled or expired while the part streamed in.
      upload = await expireIfDue((await meta.getUpload(upload.project, upload.id)) ?? upload);
      if (upload.status !== 'pending') throw notPending(upload, 'parts can no longer be added');
      // Parts sent in parallel each fit alone: the count decides which ones fit together.
      const fitted = await meta.addUploadPartBytes(upload.id, form.file.bytes, limit);
      if (!fitted) {
        const current = (await meta.getUpload(upload.project, upload.id)) ?? upload;
        if (current.status !== 'pending') throw notPending(current, 'parts can no longer be added');
        throw overAnnounced(current, limit);
      }
      counted = form.file.bytes;
      const now = clock.now();
      const part: UploadPartRecord = {
        id: partId,
        uploadId: upload.id,
        project: upload.project,
        bytes: form.file.bytes,
        createdAtMs: now,
        blobKey,
        summary: scan.end(),
      };
      await meta.putUploadPart(part);
      return c.json({ id: part.id, object: 'upload.part' as const, created_at: Math.floor(now / 1000), upload_id: upload.id });
    } catch (error) {
      await blobs.delete([blobKey]).catch(() => undefined);
      if (counted > 0) await meta.addUploadPartBytes(upload.id, -counted, limit).catch(() => undefined);
      throw error;
    }
  });

  /**
   * Claims a pending upload for this complete's join. While another complete holds the claim, waits
   * (up to waitMs) for it to finish or to run out. Answers the claimed upload and the claim's end,
   * or the upload once it is no longer pending (completed by the other, cancelled or expired).
   */
  async function claimCompletion(upload: UploadRecord): Promise<{ claimed: UploadRecord; until: number } | { settled: UploadRecord }> {
    const waitUntil = clock.now() + waitMs;
    let current = upload;
    for (;;) {
      if (current.status !== 'pending') return { settled: current };
      const now = clock.now();
      if (current.completingUntilMs === undefined || current.completingUntilMs <= now) {
        // Free, or its claimant is gone (it held it as long as a request can run): join here.
        const until = now + leaseMs;
        const claimed = await meta.claimUploadCompletion(current.id, now, until);
        if (claimed) return { claimed, until };
      }
      if (now >= waitUntil) {
        throw unavailable(
          `Upload ${current.id} is still being assembled from its parts by an earlier complete request; repeat the request to get the completed upload.`,
          'upload_completing',
          COMPLETE_RETRY_AFTER_SECONDS,
        );
      }
      await clock.sleep(COMPLETE_POLL_MS);
      current = await expireIfDue((await meta.getUpload(current.project, current.id)) ?? current);
    }
  }

  api.post('/uploads/:id/complete', jsonLimit, async (c) => {
    const body = parse(completeUploadSchema, await jsonBody(c));
    // An id that cannot be a part's names none of this upload's parts, whatever the store holds.
    const notAPart = body.part_ids.find((id) => !isIdOf('part', id));
    if (notAPart !== undefined) throw badRequest(`'${quoted(notAPart)}' is not a part id (part_…).`, 'part_ids');
    const found = await expireIfDue(await uploadOf(c));
    // A repeated complete (a retry after a lost answer) gets the completed upload again.
    if (found.status === 'completed') return respond(c, found);
    if (found.status !== 'pending') throw notPending(found, 'it cannot be completed');

    const seen = new Set<string>();
    for (const id of body.part_ids) {
      if (seen.has(id)) throw badRequest(`part_ids names the part ${id} twice.`, 'part_ids');
      seen.add(id);
    }
    // One join at a time: a retry of a complete whose join outlived the gateway's answer waits for
    // that join instead of starting another.
    const claim = await claimCompletion(found);
    if ('settled' in claim) {
      if (claim.settled.status === 'completed') return respond(c, claim.settled);
      throw notPending(claim.settled, 'it cannot be completed');
    }
    try {
      return await completeClaimed(c, claim.claimed, body);
    } catch (error) {
      // Whatever refused or broke the join, a retry may start at once.
      await meta.releaseUploadCompletion(claim.claimed.id, claim.until).catch(() => undefined);
      // A cancel during the join deletes the parts under it: answer the cancel, not a server error.
      if (!(error instanceof ApiError)) {
        const current = await meta.getUpload(claim.claimed.project, claim.claimed.id).catch(() => undefined);
        if (current && current.status !== 'pending' && current.status !== 'completed') throw notPending(current, 'it cannot be completed');
      }
      throw error;
    }
  });

  /** Joins the parts of an upload this complete has claimed, and completes it. */
  async function completeClaimed(c: Context<Env>, upload: UploadRecord, body: CompleteBody) {
    const parts: UploadPartRecord[] = [];
    for (let i = 0; i < body.part_ids.length; i += PART_LOOKUPS_IN_FLIGHT) {
      const ids = body.part_ids.slice(i, i + PART_LOOKUPS_IN_FLIGHT);
      const found = await Promise.all(ids.map((id) => meta.getUploadPart(upload.id, id)));
      found.forEach((part, k) => {
        if (!part || part.project !== upload.project) throw badRequest(`Upload ${upload.id} has no part with id '${ids[k]}'.`, 'part_ids');
        parts.push(part);
      });
    }
    const sum = parts.reduce((total, part) => total + part.bytes, 0);
    if (sum !== upload.bytes) {
      throw badRequest(
        `The parts add up to ${sum} bytes, but the upload was created for ${upload.bytes} bytes.`,
        'part_ids',
        'upload_size_mismatch',
      );
    }

    const fileId = uploadFileId(upload.id);
    const fileKey = blobKeys.file(fileId);
    const limits = checkLimits(deps.limits);
    const sizeMismatch = (bytes: number) =>
      badRequest(
        `The parts hold ${bytes} bytes, but the upload was created for ${upload.bytes} bytes.`,
        'part_ids',
        'upload_size_mismatch',
      );
    const md5Mismatch = (digest: string) => badRequest(`The md5 of the joined parts is ${digest}, not ${body.md5}.`, 'md5', 'md5_mismatch');
    const summarized = await Promise.all(parts.map((part) => withSummary(part, limits)));
    const problem = await checkJoinedParts(summarized, limits, (start, end) => readParts(parts, start, end));
    if (problem) throw fileRefused(problem);
    // An md5 needs every byte in order, which a parallel join does not give: it is one more
    // sequential read of the parts beside the join, and the file is stored only if it matches.
    const hashing = new AbortController();
    const md5Matches =
      body.md5 === undefined
        ? undefined
        : md5Of(parts, hashing.signal).then((digest) => {
            if (digest !== body.md5!.toLowerCase()) throw md5Mismatch(digest);
          });
    let joined: number;
    try {
      joined = (
        await blobs.concat(
          fileKey,
          parts.map((part) => part.blobKey),
          { sizes: parts.map((part) => part.bytes), gate: md5Matches },
        )
      ).bytes;
    } finally {
      hashing.abort();
    }
    if (joined !== upload.bytes) {
      await blobs.delete([fileKey]);
      throw sizeMismatch(joined);
    }

    const now = clock.now();
    const file: FileRecord = {
      id: fileId,
      project: upload.project,
      filename: upload.filename,
      purpose: 'batch',
      bytes: joined,
      createdAtMs: now,
      expiresAtMs: now + (upload.fileExpiresAfterSeconds ?? BATCH_FILE_RETENTION_SECONDS) * 1000,
      blobKey: fileKey,
    };
    await meta.putFile(file);
    const completed = await meta.updateUpload(upload.id, ['pending'], { status: 'completed', fileId });
    if (!completed) {
      // Another complete won (same file id: its file is this one), or a cancel did.
      const current = (await meta.getUpload(upload.project, upload.id)) ?? upload;
      if (current.status === 'completed' && current.fileId === fileId) return respond(c, current);
      const deleted = await meta.deleteFile(upload.project, fileId);
      if (!deleted?.blobInUse) await blobs.delete([fileKey]);
      throw notPending(current, 'it cannot be completed');
    }
    await deleteParts(upload.id);
    return c.json(toUploadObject(completed, file, now));
  }

  api.post('/uploads/:id/cancel', async (c) => {
    const upload = await expireIfDue(await uploadOf(c));
    if (upload.status === 'cancelled') return respond(c, upload);
    if (upload.status !== 'pending') throw notPending(upload, 'it cannot be cancelled');
    const cancelled = await meta.updateUpload(upload.id, ['pending'], { status: 'cancelled' });
    if (!cancelled) {
      const current = (await meta.getUpload(upload.project, upload.id)) ?? upload;
      if (current.status === 'cancelled') return respond(c, current);
      throw notPending(current, 'it cannot be cancelled');
    }
    await deleteParts(upload.id);
    return respond(c, cancelled);
  });
}
