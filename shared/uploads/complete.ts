// Completing an upload: the parts named, in order, joined into the upload's File. The file is
// checked from the parts' summaries and its first request line, and the parts are joined by the
// BlobStore (in parallel on S3), so its cost is mostly metadata even for gigabytes; an md5, when
// given, is one more read of the parts.
//
// One join at a time: a complete claims the upload for as long as a request can run. A retry of a
// complete whose join outlived the gateway's answer waits for that join instead of starting another,
// and a claim whose claimant is gone runs out. The File's id depends only on the upload, so two
// completes that both joined make one file.
//
// A request may have a deadline (API_ROUTE_DEADLINE: API Gateway cuts requests at 30 s). Where the
// join can go on elsewhere (handOffComplete: in AWS, an invocation of its own), a join still running
// at the deadline stops at its next step, gives up its claim and is handed over; the answer is 503
// `upload_completing` with Retry-After, and a repeated complete gets the completed upload once the
// handed-over join is done. Where it cannot (npm start), the join simply goes on in the process.
import { createHash } from 'node:crypto';
import { fileRecord } from '../batch/files.js';
import { blobKeys } from '../batch/keys.js';
import type { UploadPartRecord, UploadRecord } from '../batch/model.js';
import { joinSummaries } from '../input/part-summary.js';
import { checkJoinedParts, PartScan, type SummarizedPart, summaryFits, type UploadCheckLimits } from '../input/upload-check.js';
import { errorMessage, type Logger } from '../log.js';
import type { BlobStore } from '../ports.js';
import {
  UploadFileRefused,
  UploadMd5Mismatch,
  UploadNotPending,
  UploadPartsRefused,
  UploadRefusal,
  UploadSizeMismatch,
  UploadStillCompleting,
} from './errors.js';
import {
  type CompleteHandOff,
  checkLimits,
  DEFAULT_COMPLETE_LEASE_MS,
  DEFAULT_COMPLETE_WAIT_MS,
  expireIfDue,
  finishPending,
  type UploadDeps,
  uploadFileId,
} from './model.js';

/** Part records looked up at once on complete. */
const PART_LOOKUPS_IN_FLIGHT = 32;
/** A waiting complete reads the upload this often. */
const COMPLETE_POLL_MS = 500;
/** An asynchronous Lambda invocation carries at most 256 KB: a complete naming more parts than fit is not handed over. */
const MAX_HAND_OFF_BYTES = 240_000;

export interface CompleteRequest {
  /** The ids of the parts, in order (already checked to look like part ids). */
  partIds: readonly string[];
  md5?: string;
}

/**
 * The upload completed with its File (a repeated complete gets the completed upload again). Throws
 * an UploadRefusal (UploadNotPending, UploadPartsRefused, UploadSizeMismatch, UploadMd5Mismatch,
 * UploadFileRefused, UploadStillCompleting) when it cannot be.
 */
export async function completeUpload(
  deps: UploadDeps,
  found: UploadRecord,
  request: CompleteRequest,
  options: { deadline?: AbortSignal } = {},
): Promise<UploadRecord> {
  const upload = await expireIfDue(deps, found);
  if (upload.status === 'completed') return upload;
  if (upload.status !== 'pending') throw new UploadNotPending(upload, 'it cannot be completed');
  const seen = new Set<string>();
  for (const id of request.partIds) {
    if (seen.has(id)) throw new UploadPartsRefused(`part_ids names the part ${id} twice.`);
    seen.add(id);
  }
  const claim = await claimCompletion(deps, upload, options.deadline);
  if ('settled' in claim) {
    if (claim.settled.status === 'completed') return claim.settled;
    throw new UploadNotPending(claim.settled, 'it cannot be completed');
  }
  const handOff = handOffOf(deps, claim.claimed, request, options.deadline);
  const stop = new AbortController();
  try {
    const join = joinClaimed(deps, claim.claimed, request, stop.signal);
    if (!handOff) return await join;
    const first = await Promise.race([join.then((upload) => ({ upload })), aborted(handOff.deadline)]);
    if ('upload' in first) return first.upload;
    // The deadline: this join stops at its next step (it may have stored the joined object, which
    // the next join writes again, byte for byte), and the join goes on where it has time.
    stop.abort();
    join.catch(() => undefined);
    await deps.meta.releaseUploadCompletion(claim.claimed.id, claim.until);
    await handOff.run();
    throw new UploadStillCompleting(claim.claimed);
  } catch (error) {
    if (error instanceof UploadStillCompleting) throw error;
    // Whatever refused or broke the join, a retry may start at once.
    await deps.meta.releaseUploadCompletion(claim.claimed.id, claim.until).catch(() => undefined);
    // A cancel during the join deletes the parts under it: answer the cancel, not a server error.
    if (!(error instanceof UploadRefusal)) {
      const current = await deps.meta.getUpload(claim.claimed.project, claim.claimed.id).catch(() => undefined);
      if (current && current.status !== 'pending' && current.status !== 'completed') {
        throw new UploadNotPending(current, 'it cannot be completed');
      }
    }
    throw error;
  }
}

/**
 * Claims a pending upload for this complete's join. While another complete holds the claim, waits
 * (up to completeWaitMs) for it to finish or to run out. Answers the claimed upload and the claim's
 * end, or the upload once it is no longer pending (completed by the other, cancelled or expired).
 */
async function claimCompletion(
  deps: UploadDeps,
  upload: UploadRecord,
  deadline: AbortSignal | undefined,
): Promise<{ claimed: UploadRecord; until: number } | { settled: UploadRecord }> {
  const { meta, clock } = deps;
  const leaseMs = deps.completeLeaseMs ?? DEFAULT_COMPLETE_LEASE_MS;
  const waitUntil = clock.now() + (deps.completeWaitMs ?? DEFAULT_COMPLETE_WAIT_MS);
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
    // The request's deadline ends the wait too: the client is told to repeat it (Retry-After).
    if (now >= waitUntil || deadline?.aborted) throw new UploadStillCompleting(current);
    await clock.sleep(COMPLETE_POLL_MS, deadline).catch(() => undefined);
    current = await expireIfDue(deps, (await meta.getUpload(current.project, current.id)) ?? current);
  }
}

/** A hand-off of this complete at `deadline`, where there is somewhere to hand it off to. */
function handOffOf(deps: UploadDeps, upload: UploadRecord, request: CompleteRequest, deadline: AbortSignal | undefined) {
  const { handOffComplete } = deps;
  if (!handOffComplete || !deadline) return undefined;
  const job: CompleteHandOff = {
    project: upload.project,
    uploadId: upload.id,
    partIds: [...request.partIds],
    ...(request.md5 === undefined ? {} : { md5: request.md5 }),
  };
  if (Buffer.byteLength(JSON.stringify(job)) > MAX_HAND_OFF_BYTES) return undefined;
  return { deadline, run: () => handOffComplete(job) };
}

function aborted(signal: AbortSignal): Promise<{ deadline: true }> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve({ deadline: true });
    else signal.addEventListener('abort', () => resolve({ deadline: true }), { once: true });
  });
}

/**
 * Runs a complete handed over by a request that reached its deadline (in AWS, in an invocation of
 * its own). Its outcome is the upload's: the client's repeated complete reads it.
 */
export async function runHandedOffComplete(deps: UploadDeps & { log: Logger }, job: CompleteHandOff): Promise<UploadRecord | undefined> {
  const upload = await deps.meta.getUpload(job.project, job.uploadId);
  if (!upload) return undefined;
  try {
    return await completeUpload(deps, upload, { partIds: job.partIds, ...(job.md5 === undefined ? {} : { md5: job.md5 }) });
  } catch (error) {
    // A refusal (a cancel meanwhile, an md5 that does not match) is the repeated complete's to answer.
    deps.log.log('warn', 'a handed-over complete did not complete its upload', { uploadId: job.uploadId, error: errorMessage(error) });
    return undefined;
  }
}

/** Joins the parts of an upload this complete has claimed, and completes it, unless `stop` aborts first. */
async function joinClaimed(deps: UploadDeps, upload: UploadRecord, request: CompleteRequest, stop: AbortSignal): Promise<UploadRecord> {
  const { meta, blobs, clock } = deps;
  const parts = await partsOf(deps, upload, request.partIds);
  const sum = parts.reduce((total, part) => total + part.bytes, 0);
  if (sum !== upload.bytes) throw new UploadSizeMismatch(upload, sum, 'add up to');

  const limits = checkLimits(deps.limits);
  const summarized = await Promise.all(parts.map((part) => withSummary(blobs, part, limits)));
  const checked = await checkJoinedParts(summarized, limits, (start, end) => readParts(blobs, parts, start, end));
  if (checked.problem) throw new UploadFileRefused(checked.problem);

  const fileId = uploadFileId(upload.id);
  const fileKey = blobKeys.file(fileId);
  // An md5 needs every byte in order, which a parallel join does not give: it is one more
  // sequential read of the parts beside the join, and the file is stored only if it matches.
  const hashing = new AbortController();
  const expected = request.md5?.toLowerCase();
  const md5Matches =
    expected === undefined
      ? undefined
      : md5Of(blobs, parts, hashing.signal).then((digest) => {
          if (digest !== expected) throw new UploadMd5Mismatch(digest, request.md5!);
        });
  let joined: number;
  stop.throwIfAborted();
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
  stop.throwIfAborted();
  if (joined !== upload.bytes) {
    await blobs.delete([fileKey]);
    throw new UploadSizeMismatch(upload, joined, 'hold');
  }

  const file = fileRecord(
    {
      id: fileId,
      project: upload.project,
      filename: upload.filename,
      purpose: 'batch',
      bytes: joined,
      expiresAfterSeconds: upload.fileExpiresAfterSeconds,
      requests: joinSummaries(summarized, limits.maxLineBytes).requests,
      ...(checked.model !== undefined ? { model: checked.model } : {}),
    },
    clock.now(),
  );
  await meta.putFile(file);
  return finishPending(deps, upload, { status: 'completed', fileId }, async (current = upload) => {
    // Another complete won (same file id: its file is this one), or a cancel did.
    if (current.status === 'completed' && current.fileId === fileId) return current;
    const deleted = await meta.deleteFile(upload.project, fileId);
    if (!deleted?.blobInUse) await blobs.delete([file.blobKey]);
    throw new UploadNotPending(current, 'it cannot be completed');
  });
}

/** The part records of these ids, in order; throws UploadPartsRefused for one the upload does not have. */
async function partsOf(deps: Pick<UploadDeps, 'meta'>, upload: UploadRecord, partIds: readonly string[]): Promise<UploadPartRecord[]> {
  const parts: UploadPartRecord[] = [];
  for (let i = 0; i < partIds.length; i += PART_LOOKUPS_IN_FLIGHT) {
    const ids = partIds.slice(i, i + PART_LOOKUPS_IN_FLIGHT);
    const found = await Promise.all(ids.map((id) => deps.meta.getUploadPart(upload.id, id)));
    found.forEach((part, k) => {
      if (!part || part.project !== upload.project) throw new UploadPartsRefused(`Upload ${upload.id} has no part with id '${ids[k]}'.`);
      parts.push(part);
    });
  }
  return parts;
}

/** The bytes [start, end) of the parts joined in order. */
async function* readParts(
  blobs: Pick<BlobStore, 'get'>,
  parts: readonly UploadPartRecord[],
  start: number,
  end: number,
): AsyncGenerator<Uint8Array> {
  let at = 0;
  for (const part of parts) {
    if (at >= end) return;
    const from = Math.max(start - at, 0);
    const to = Math.min(end - at, part.bytes);
    if (from < to) yield* await blobs.get(part.blobKey, { start: from, end: to });
    at += part.bytes;
  }
}

async function md5Of(blobs: Pick<BlobStore, 'get'>, parts: readonly UploadPartRecord[], signal: AbortSignal): Promise<string> {
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
async function withSummary(blobs: Pick<BlobStore, 'get'>, part: UploadPartRecord, limits: UploadCheckLimits): Promise<SummarizedPart> {
  if (summaryFits(part.summary, limits)) return { bytes: part.bytes, summary: part.summary };
  const scan = new PartScan(limits);
  for await (const piece of await blobs.get(part.blobKey)) scan.push(piece);
  return { bytes: part.bytes, summary: scan.end() };
}
