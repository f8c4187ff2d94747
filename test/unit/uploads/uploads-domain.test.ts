// The Uploads domain without HTTP or a database: what an upload accepts and refuses, and that each
// refusal carries the upload as it is now and leaves nothing behind.
import { createHash } from 'node:crypto';
import { beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_FILE_RETENTION_SECONDS } from '../../../shared/batch/files.js';
import type { UploadRecord } from '../../../shared/batch/model.js';
import type { Clock } from '../../../shared/ports.js';
import { addUploadPart, type ReceivedPart } from '../../../shared/uploads/add-part.js';
import { completeUpload } from '../../../shared/uploads/complete.js';
import { cancelUpload, createUpload } from '../../../shared/uploads/create.js';
import * as refusals from '../../../shared/uploads/errors.js';
import { leavePending, MAX_PART_BYTES, type UploadDeps, UploadStatusConflict, uploadKeys } from '../../../shared/uploads/model.js';
import { uploadSweeper } from '../../../shared/uploads/sweep.js';
import { MemoryBlobStore, MemoryMetaStore } from '../../support/memory-stores.js';

const HOUR = 3_600_000;
const LINE = '{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}\n';

describe('the Uploads domain', () => {
  let now: number;
  let meta: MemoryMetaStore;
  let blobs: MemoryBlobStore;
  let deps: UploadDeps;
  const clock: Clock = {
    now: () => now,
    sleep: async (ms) => {
      now += ms;
    },
  };

  beforeEach(() => {
    now = Date.UTC(2026, 11, 1);
    meta = new MemoryMetaStore(() => now);
    blobs = new MemoryBlobStore();
    deps = { meta, blobs, clock, limits: { maxFileBytes: 10_000, maxLineBytes: 1_000, maxRequestsPerBatch: 10 } };
  });

  const upload = (bytes: number) =>
    createUpload(deps, { project: 'alpha', filename: 'in.jsonl', bytes, mimeType: 'application/jsonl', fileExpiresAfterSeconds: null });

  /** A receiver that hands the store these bytes, cut at what the domain lets in, as the multipart reader does. */
  const sending =
    (text: string) =>
    async (maxBytes: number, store: (body: AsyncIterable<Uint8Array>) => Promise<{ bytes: number }>): Promise<ReceivedPart> => {
      const bytes = new TextEncoder().encode(text);
      const kept = bytes.subarray(0, maxBytes);
      await store(
        (async function* () {
          yield kept;
        })(),
      );
      return { bytes: kept.length, truncated: bytes.length > maxBytes };
    };

  const refusal = async (promise: Promise<unknown>) =>
    promise.then(
      () => expect.unreachable('refused'),
      (error: unknown) => error,
    );

  it('creates a pending upload that lasts an hour, and refuses one that is empty or larger than a file may be', async () => {
    const created = await upload(LINE.length);
    expect(created).toMatchObject({ project: 'alpha', status: 'pending', createdAtMs: now, expiresAtMs: now + HOUR, fileId: null });
    expect(await meta.getUpload('alpha', created.id)).toEqual(created);
    expect(await meta.getUpload('beta', created.id)).toBeUndefined();

    expect(await refusal(upload(0))).toBeInstanceOf(refusals.UploadSizeRefused);
    const over = await refusal(upload(10_001));
    expect(over).toBeInstanceOf(refusals.UploadSizeRefused);
    expect(over).toMatchObject({ bytes: 10_001, limit: 10_000 });
    expect(meta.uploads.size).toBe(1);
  });

  it('stores parts within the announced bytes, and a refused part stores nothing and counts nothing', async () => {
    const created = await upload(100);
    const part = await addUploadPart(deps, created, sending('x'.repeat(60)));
    expect(part).toMatchObject({ uploadId: created.id, project: 'alpha', bytes: 60, blobKey: uploadKeys.part(created.id, part.id) });
    expect(await blobs.list(uploadKeys.parts(created.id))).toEqual([part.blobKey]);

    const over = await refusal(addUploadPart(deps, created, sending('x'.repeat(41))));
    expect(over).toBeInstanceOf(refusals.UploadOverAnnounced);
    expect((over as refusals.UploadOverAnnounced).upload.partBytes).toBe(60);
    expect(await refusal(addUploadPart(deps, created, sending('')))).toBeInstanceOf(refusals.UploadPartEmpty);
    expect(await blobs.list(uploadKeys.parts(created.id))).toEqual([part.blobKey]);
    expect((await meta.getUpload('alpha', created.id))?.partBytes).toBe(60);
  });

  it('refuses a part over MAX_PART_BYTES when the upload has room for it', async () => {
    deps.limits.maxFileBytes = MAX_PART_BYTES * 2;
    const created = await upload(MAX_PART_BYTES + 10);
    const receivedBig = async (maxBytes: number, store: (body: AsyncIterable<Uint8Array>) => Promise<{ bytes: number }>) => {
      await store((async function* () {})());
      return { bytes: maxBytes, truncated: true };
    };
    expect(await refusal(addUploadPart(deps, created, receivedBig))).toBeInstanceOf(refusals.UploadPartTooLarge);
    expect(await blobs.list(uploadKeys.parts(created.id))).toEqual([]);
  });

  it('records an upload past its hour as expired when it is next used, with its parts gone', async () => {
    const created = await upload(LINE.length * 2);
    await addUploadPart(deps, created, sending(LINE));
    now += HOUR;
    const expired = await refusal(addUploadPart(deps, created, sending(LINE)));
    expect(expired).toBeInstanceOf(refusals.UploadNotPending);
    expect((expired as refusals.UploadNotPending).upload.status).toBe('expired');
    expect((expired as Error).message).toContain('an upload lasts an hour');
    expect((await meta.getUpload('alpha', created.id))?.status).toBe('expired');
    expect(await blobs.list(uploadKeys.parts(created.id))).toEqual([]);
  });

  it('completes into a File of the parts joined in order, living the default 30 days, and again answers the same', async () => {
    const created = await upload(LINE.length * 2);
    const second = await addUploadPart(deps, created, sending(LINE.replace('"a"', '"b"')));
    const first = await addUploadPart(deps, created, sending(LINE));
    const md5 = createHash('md5')
      .update(LINE + LINE.replace('"a"', '"b"'))
      .digest('hex');
    const completed = await completeUpload(deps, created, { partIds: [first.id, second.id], md5 });
    expect(completed.status).toBe('completed');
    const file = await meta.getFile('alpha', completed.fileId!);
    expect(file).toMatchObject({ purpose: 'batch', bytes: LINE.length * 2, filename: 'in.jsonl', createdAtMs: now });
    expect(file?.expiresAtMs).toBe(now + DEFAULT_FILE_RETENTION_SECONDS * 1000);
    expect(Buffer.from(blobs.objects.get(file!.blobKey)!).toString()).toBe(LINE + LINE.replace('"a"', '"b"'));
    expect(await blobs.list(uploadKeys.parts(created.id))).toEqual([]);

    expect(await completeUpload(deps, created, { partIds: [first.id, second.id] })).toEqual(completed);
    expect(meta.files.size).toBe(1);
  });

  it('refuses a complete whose parts or md5 do not match, and changes nothing', async () => {
    const created = await upload(LINE.length * 2);
    const part = await addUploadPart(deps, created, sending(LINE));
    const short = await refusal(completeUpload(deps, created, { partIds: [part.id] }));
    expect(short).toBeInstanceOf(refusals.UploadSizeMismatch);
    expect(short).toMatchObject({ bytes: LINE.length, upload: { id: created.id } });
    expect(await refusal(completeUpload(deps, created, { partIds: [part.id, part.id] }))).toBeInstanceOf(refusals.UploadPartsRefused);
    expect(await refusal(completeUpload(deps, created, { partIds: ['part_nothere'] }))).toBeInstanceOf(refusals.UploadPartsRefused);

    const other = await addUploadPart(deps, created, sending(LINE));
    const wrong = await refusal(completeUpload(deps, created, { partIds: [part.id, other.id], md5: '0'.repeat(32) }));
    expect(wrong).toBeInstanceOf(refusals.UploadMd5Mismatch);
    expect(meta.files.size).toBe(0);
    expect(blobs.objects.size).toBe(2);
    const current = await meta.getUpload('alpha', created.id);
    expect(current?.status).toBe('pending');
    // The claim was given back: a retry may start at once.
    expect(current?.completingUntilMs).toBeUndefined();
  });

  it('answers refusals.UploadStillCompleting while another complete holds the claim past the wait', async () => {
    const created = await upload(LINE.length);
    const part = await addUploadPart(deps, created, sending(LINE));
    await meta.claimUploadCompletion(created.id, now, now + 60_000);
    const waiting = await refusal(completeUpload({ ...deps, completeWaitMs: 2_000 }, created, { partIds: [part.id] }));
    expect(waiting).toBeInstanceOf(refusals.UploadStillCompleting);
    expect((waiting as refusals.UploadStillCompleting).upload.id).toBe(created.id);
  });

  it('cancels a pending upload (again is harmless), not a completed one', async () => {
    const created = await upload(LINE.length);
    await addUploadPart(deps, created, sending(LINE));
    const cancelled = await cancelUpload(deps, created);
    expect(cancelled.status).toBe('cancelled');
    expect(await blobs.list(uploadKeys.parts(created.id))).toEqual([]);
    expect(await cancelUpload(deps, created)).toEqual(cancelled);

    const done = await upload(LINE.length);
    const part = await addUploadPart(deps, done, sending(LINE));
    await completeUpload(deps, done, { partIds: [part.id] });
    const refused = await refusal(cancelUpload(deps, done));
    expect(refused).toBeInstanceOf(refusals.UploadNotPending);
    expect((refused as refusals.UploadNotPending).upload.status).toBe('completed');
  });

  it('raises UploadStatusConflict with the current record when a status change loses', async () => {
    const created = await upload(LINE.length);
    await meta.updateUpload(created.id, ['pending'], { status: 'cancelled' });
    const conflict = await refusal(leavePending(meta, created, { status: 'expired' }));
    expect(conflict).toBeInstanceOf(UploadStatusConflict);
    expect((conflict as UploadStatusConflict).current).toMatchObject<Partial<UploadRecord>>({ id: created.id, status: 'cancelled' });
  });

  it('sweeps the parts of an upload that expired untouched, and keeps those of a live one', async () => {
    const expiring = await upload(LINE.length * 2);
    await addUploadPart(deps, expiring, sending(LINE));
    now += HOUR / 2;
    const live = await upload(LINE.length * 2);
    await addUploadPart(deps, live, sending(LINE));
    now += HOUR / 2;
    const sweeper = uploadSweeper({ meta, blobs, clock, log: { log: () => undefined } });
    expect(await sweeper.sweep()).toEqual({ uploads: 1, parts: 1 });
    expect((await meta.getUpload('alpha', expiring.id))?.status).toBe('expired');
    expect(await blobs.list(uploadKeys.parts(live.id))).toHaveLength(1);
  });
});
