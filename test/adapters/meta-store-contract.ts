// Behaviour every MetaStore must have, whatever stores it. An adapter's test file calls
// metaStoreContract() with a setup that builds a fresh store.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ApiKeyRecord,
  type BatchRecord,
  type ChunkOutcome,
  type FileRecord,
  type UploadPartRecord,
  type UploadRecord,
  ZERO_USAGE,
} from '../../shared/batch/model.js';
import { batchEvent } from '../../shared/events/model.js';
import { newSigningSecret, type WebhookDeliveryRecord, type WebhookEndpointRecord } from '../../shared/events/webhook-model.js';
import { newBatchId, newFileId, newWebhookEndpointId } from '../../shared/ids.js';
import { type BatchFilter, BatchStatusConflict, type MetaStore } from '../../shared/ports.js';
import { race as raceWrites } from '../support/race.js';

const HOUR = 3_600_000;

/** A fresh id; files and batches get the shapes the API accepts (shared/ids.ts), so records made here pass its checks. */
const uid = (prefix: string) =>
  prefix === 'file' ? newFileId() : prefix === 'batch' ? newBatchId() : `${prefix}_${randomUUID().replaceAll('-', '')}`;

export function batchRecord(overrides: Partial<BatchRecord> = {}): BatchRecord {
  const createdAtMs = overrides.createdAtMs ?? Date.now();
  return {
    id: uid('batch'),
    project: uid('proj'),
    endpoint: '/v1/chat/completions',
    inputFileId: uid('file'),
    completionWindow: '24h',
    status: 'validating',
    model: null,
    metadata: null,
    outputExpiresAfterSeconds: null,
    errors: null,
    outputFileId: null,
    errorFileId: null,
    createdAtMs,
    expiresAtMs: createdAtMs + 24 * HOUR,
    inProgressAtMs: null,
    finalizingAtMs: null,
    completedAtMs: null,
    failedAtMs: null,
    expiredAtMs: null,
    cancellingAtMs: null,
    cancelledAtMs: null,
    total: 0,
    completed: 0,
    failed: 0,
    unrun: 0,
    usage: { ...ZERO_USAGE },
    taskToken: null,
    chunkCount: 0,
    doneChunks: [],
    chunkAttempts: {},
    ...overrides,
  };
}

export function webhookEndpointRecord(overrides: Partial<WebhookEndpointRecord> = {}): WebhookEndpointRecord {
  return {
    id: newWebhookEndpointId(),
    project: uid('proj'),
    name: 'receiver',
    url: 'https://hooks.example.com/batch',
    eventTypes: ['batch.completed'],
    secret: newSigningSecret(),
    previousSecret: null,
    previousSecretExpiresAtMs: null,
    createdAtMs: Date.now(),
    updatedAtMs: Date.now(),
    ...overrides,
  };
}

export function fileRecord(overrides: Partial<FileRecord> = {}): FileRecord {
  const id = overrides.id ?? uid('file');
  return {
    id,
    project: uid('proj'),
    filename: 'requests.jsonl',
    purpose: 'batch',
    bytes: 1234,
    createdAtMs: Date.now(),
    expiresAtMs: null,
    blobKey: `files/${id}`,
    ...overrides,
  };
}

function outcome(index: number, overrides: Partial<ChunkOutcome> = {}): ChunkOutcome {
  return {
    index,
    attempt: `attempt-${index}`,
    completed: 3,
    failed: 1,
    unrun: 0,
    usage: { inputTokens: 10, cachedTokens: 2, outputTokens: 5, reasoningTokens: 1, totalTokens: 15 },
    ...overrides,
  };
}

export interface MetaStoreSetup {
  store: MetaStore;
  close(): Promise<void>;
  /**
   * The backend does not serialize concurrent writes to one item (moto: it may lose an ADD, or let
   * two conditional writes both pass), where DynamoDB does: the racing cases send their writes one
   * at a time, and expect exactly the same outcome.
   */
  serializeWritesToOneItem?: boolean;
}

export function metaStoreContract(name: string, setup: () => Promise<MetaStoreSetup>): void {
  describe(`MetaStore contract: ${name}`, () => {
    let store: MetaStore;
    let close: () => Promise<void>;
    let serialize = false;

    beforeAll(async () => {
      const built = await setup();
      ({ store, close } = built);
      serialize = built.serializeWritesToOneItem ?? false;
    });

    const race = <T>(calls: (() => Promise<T>)[]) => raceWrites(calls, serialize);
    afterAll(async () => {
      await close();
    });

    /** Puts `count` files of one project, created 1 s apart, in shuffled order; returns them oldest first. */
    async function putFiles(project: string, count: number, purposeOf: (i: number) => FileRecord['purpose'] = () => 'batch') {
      const base = Date.now() - 10 * HOUR;
      const files = Array.from({ length: count }, (_, i) => fileRecord({ project, createdAtMs: base + i * 1000, purpose: purposeOf(i) }));
      const shuffled = [...files].sort(() => Math.random() - 0.5);
      for (const file of shuffled) await store.putFile(file);
      return files;
    }

    async function inProgressBatch(overrides: Partial<BatchRecord> = {}) {
      const batch = batchRecord({ status: 'in_progress', chunkCount: 20, total: 80, ...overrides });
      await store.createBatch(batch);
      return batch;
    }

    describe('files', () => {
      it('puts and gets a file, with and without an expiry', async () => {
        const forever = fileRecord();
        const expiring = fileRecord({ project: forever.project, expiresAtMs: Date.now() + HOUR });
        await store.putFile(forever);
        await store.putFile(expiring);
        expect(await store.getFile(forever.project, forever.id)).toEqual(forever);
        expect(await store.getFile(forever.project, expiring.id)).toEqual(expiring);
        expect(await store.getFile(forever.project, uid('file'))).toBeUndefined();
      });

      it('lists newest first, and oldest first for asc', async () => {
        const project = uid('proj');
        const files = await putFiles(project, 5);
        const desc = await store.listFiles(project, { limit: 10, order: 'desc' });
        expect(desc.items.map((f) => f.id)).toEqual(files.map((f) => f.id).reverse());
        expect(desc.items[0]).toEqual(files[4]);
        expect(desc.hasMore).toBe(false);
        const asc = await store.listFiles(project, { limit: 10, order: 'asc' });
        expect(asc.items.map((f) => f.id)).toEqual(files.map((f) => f.id));
      });

      it('pages with after, with an exact hasMore', async () => {
        const project = uid('proj');
        const ids = (await putFiles(project, 6)).map((f) => f.id).reverse();
        for (const order of ['desc', 'asc'] as const) {
          const expected = order === 'desc' ? ids : [...ids].reverse();
          const pages: { ids: string[]; hasMore: boolean }[] = [];
          let after: string | undefined;
          do {
            const page = await store.listFiles(project, { limit: 2, order, after });
            pages.push({ ids: page.items.map((f) => f.id), hasMore: page.hasMore });
            after = page.hasMore ? page.items.at(-1)?.id : undefined;
          } while (after && pages.length < 10);
          // 6 items in pages of 2: the third page is the last one, and says so.
          expect(pages).toEqual([
            { ids: expected.slice(0, 2), hasMore: true },
            { ids: expected.slice(2, 4), hasMore: true },
            { ids: expected.slice(4, 6), hasMore: false },
          ]);
        }
      });

      it('filters by purpose across pages', async () => {
        const project = uid('proj');
        // Oldest first: batch, output, output, output, batch, output, output, batch, batch.
        const purposes = [
          'batch',
          'batch_output',
          'batch_output',
          'batch_output',
          'batch',
          'batch_output',
          'batch_output',
          'batch',
          'batch',
        ] as const;
        const files = await putFiles(project, purposes.length, (i) => purposes[i]!);
        const expected = files
          .filter((f) => f.purpose === 'batch')
          .map((f) => f.id)
          .reverse();

        const first = await store.listFiles(project, { limit: 3, order: 'desc', purpose: 'batch' });
        expect(first.items.map((f) => f.id)).toEqual(expected.slice(0, 3));
        expect(first.hasMore).toBe(true);
        const second = await store.listFiles(project, {
          limit: 3,
          order: 'desc',
          purpose: 'batch',
          after: first.items.at(-1)!.id,
        });
        expect(second.items.map((f) => f.id)).toEqual(expected.slice(3));
        expect(second.hasMore).toBe(false);

        const all = await store.listFiles(project, { limit: 4, order: 'desc', purpose: 'batch' });
        expect(all.items.map((f) => f.id)).toEqual(expected);
        expect(all.hasMore).toBe(false);
      });

      it('answers an empty page for an unknown or foreign cursor', async () => {
        const project = uid('proj');
        await putFiles(project, 2);
        const [foreign] = await putFiles(uid('proj'), 1);
        expect(await store.listFiles(project, { limit: 10, order: 'desc', after: uid('file') })).toEqual({
          items: [],
          hasMore: false,
        });
        expect(await store.listFiles(project, { limit: 10, order: 'desc', after: foreign!.id })).toEqual({
          items: [],
          hasMore: false,
        });
      });

      it('deletes a file once and returns it', async () => {
        const file = fileRecord({ expiresAtMs: Date.now() + HOUR });
        await store.putFile(file);
        expect(await store.deleteFile(file.project, file.id)).toEqual({ file, blobInUse: false });
        expect(await store.getFile(file.project, file.id)).toBeUndefined();
        expect(await store.deleteFile(file.project, file.id)).toBeUndefined();
        expect((await store.listFiles(file.project, { limit: 10, order: 'desc' })).items).toEqual([]);
      });

      it('hides expired files from get, list and delete', async () => {
        const live = fileRecord({ expiresAtMs: Date.now() + HOUR });
        const expired = fileRecord({ project: live.project, expiresAtMs: Date.now() - 1, createdAtMs: live.createdAtMs + 1 });
        await store.putFile(live);
        await store.putFile(expired);
        expect(await store.getFile(live.project, expired.id)).toBeUndefined();
        const page = await store.listFiles(live.project, { limit: 1, order: 'desc' });
        expect(page).toEqual({ items: [live], hasMore: false });
        expect(await store.deleteFile(live.project, expired.id)).toBeUndefined();
      });
    });

    describe('file pins', () => {
      const listedIds = async (project: string) => (await store.listFiles(project, { limit: 100, order: 'desc' })).items.map((f) => f.id);

      it('deletes an unpinned file at once, also once its pins have gone', async () => {
        const file = fileRecord({ expiresAtMs: Date.now() + HOUR });
        await store.putFile(file);
        expect(await store.pinFile(file.project, file.id, 'batch_a')).toEqual(file);
        expect(await store.pinFile(file.project, file.id, 'batch_b')).toEqual(file);
        expect(await store.unpinFile(file.id, 'batch_a')).toBeUndefined();
        expect(await store.unpinFile(file.id, 'batch_b')).toBeUndefined();
        expect(await store.getFile(file.project, file.id)).toEqual(file);
        expect(await store.deleteFile(file.project, file.id)).toEqual({ file, blobInUse: false });
        expect(await store.getInputFile(file.project, file.id)).toBeUndefined();
      });

      it('hides a deleted pinned file from the API but keeps it for its batches until the last pin goes', async () => {
        const file = fileRecord({ expiresAtMs: Date.now() + HOUR });
        await store.putFile(file);
        await store.pinFile(file.project, file.id, 'batch_a');
        await store.pinFile(file.project, file.id, 'batch_b');

        expect(await store.deleteFile(file.project, file.id)).toEqual({ file, blobInUse: true });
        expect(await store.getFile(file.project, file.id)).toBeUndefined();
        expect(await listedIds(file.project)).not.toContain(file.id);
        expect(await store.deleteFile(file.project, file.id)).toBeUndefined();
        expect(await store.pinFile(file.project, file.id, 'batch_c')).toBeUndefined();
        expect(await store.getInputFile(file.project, file.id)).toEqual(file);
        expect(await store.getInputFile(uid('proj'), file.id)).toBeUndefined();

        expect(await store.unpinFile(file.id, 'batch_a')).toBeUndefined();
        expect(await store.unpinFile(file.id, 'batch_a')).toBeUndefined();
        expect(await store.getInputFile(file.project, file.id)).toEqual(file);
        // The last pin: the file is now for the caller to remove, as often as it asks until it has.
        expect(await store.unpinFile(file.id, 'batch_b')).toEqual(file);
        expect(await store.unpinFile(file.id, 'batch_b')).toEqual(file);
        await store.purgeDeletedFile(file.id);
        expect(await store.getInputFile(file.project, file.id)).toBeUndefined();
        expect(await store.unpinFile(file.id, 'batch_b')).toBeUndefined();
        await store.purgeDeletedFile(file.id);
      });

      it('pins only a live, not deleted file of the project, and creates nothing otherwise', async () => {
        const expired = fileRecord({ expiresAtMs: Date.now() - 1 });
        await store.putFile(expired);
        const foreign = fileRecord();
        await store.putFile(foreign);
        const missing = uid('file');
        expect(await store.pinFile(expired.project, expired.id, 'batch_a')).toBeUndefined();
        expect(await store.pinFile(uid('proj'), foreign.id, 'batch_a')).toBeUndefined();
        expect(await store.pinFile(foreign.project, missing, 'batch_a')).toBeUndefined();
        expect(await store.unpinFile(missing, 'batch_a')).toBeUndefined();
        expect(await store.getInputFile(foreign.project, missing)).toBeUndefined();
        expect(await store.getInputFile(expired.project, expired.id)).toBeUndefined();
        // The refused pin left nothing behind: the file still goes at once.
        expect(await store.deleteFile(foreign.project, foreign.id)).toEqual({ file: foreign, blobInUse: false });
      });

      it('keeps a file a batch pins past its expiry: the batch reads it, the API does not, and expiry takes it once unpinned', async () => {
        const file = fileRecord({ expiresAtMs: Date.now() + 300 });
        await store.putFile(file);
        expect(await store.pinFile(file.project, file.id, 'batch_a', Date.now() + 24 * HOUR)).toEqual(file);
        await new Promise((resolve) => setTimeout(resolve, 400));
        const expiredIds = async () => (await store.listExpiredFiles(Date.now(), 100_000)).map((f) => f.id);
        expect(await store.getFile(file.project, file.id)).toBeUndefined();
        expect(await store.getInputFile(file.project, file.id)).toEqual(file);
        expect(await expiredIds()).not.toContain(file.id);
        expect(await store.deleteExpiredFile(file.id, Date.now())).toBe(false);
        // No new batch may take up an expired file.
        expect(await store.pinFile(file.project, file.id, 'batch_b', Date.now() + 24 * HOUR)).toBeUndefined();
        expect(await store.unpinFile(file.id, 'batch_a')).toBeUndefined();
        expect(await store.getInputFile(file.project, file.id)).toBeUndefined();
        expect(await expiredIds()).toContain(file.id);
        expect(await store.deleteExpiredFile(file.id, Date.now())).toBe(true);
        expect(await expiredIds()).not.toContain(file.id);
        expect(await store.deleteExpiredFile(file.id, Date.now())).toBe(false);
      });

      it('puts back, with its pins, a record expiry removed while batches pinned it, and only once', async () => {
        const file = fileRecord({ expiresAtMs: Date.now() - 1 });
        await store.restoreFile({ file, pinnedBy: ['batch_a'] }, Date.now() + 24 * HOUR);
        await store.restoreFile({ file, pinnedBy: ['batch_a', 'batch_b'] }, Date.now() + 24 * HOUR);
        expect(await store.getInputFile(file.project, file.id)).toEqual(file);
        expect(await store.getFile(file.project, file.id)).toBeUndefined();
        expect(await store.unpinFile(file.id, 'batch_a')).toBeUndefined();
        expect(await store.getInputFile(file.project, file.id)).toBeUndefined();
        expect(await store.deleteExpiredFile(file.id, Date.now())).toBe(true);
        // A file the user had deleted comes back deleted: its last unpin hands it over for removal.
        const deleted = fileRecord({ expiresAtMs: Date.now() - 1 });
        await store.restoreFile({ file: deleted, pinnedBy: ['batch_c'], deletedAtMs: Date.now() - 5 }, Date.now() + 24 * HOUR);
        expect(await store.unpinFile(deleted.id, 'batch_c')).toEqual(deleted);
        await store.purgeDeletedFile(deleted.id);
        expect(await store.getInputFile(deleted.project, deleted.id)).toBeUndefined();
      });

      it('leaves the blob to exactly one of a delete and a last unpin that race', async () => {
        const files = Array.from({ length: 10 }, () => fileRecord());
        await Promise.all(
          files.map(async (file) => {
            await store.putFile(file);
            await store.pinFile(file.project, file.id, 'batch_a');
          }),
        );
        const outcomes = await Promise.all(
          files.map(async (file) => {
            const [deleted, orphan] = (await race<unknown>([
              () => store.deleteFile(file.project, file.id),
              () => store.unpinFile(file.id, 'batch_a'),
            ])) as [Awaited<ReturnType<MetaStore['deleteFile']>>, Awaited<ReturnType<MetaStore['unpinFile']>>];
            return { deleterDeletesBlob: deleted?.blobInUse === false, unpinnerDeletesBlob: orphan !== undefined };
          }),
        );
        for (const outcome of outcomes) expect(outcome.deleterDeletesBlob).not.toBe(outcome.unpinnerDeletesBlob);
      });

      it('purges only a deleted file that nothing pins', async () => {
        const live = fileRecord();
        const pinned = fileRecord({ project: live.project });
        await store.putFile(live);
        await store.putFile(pinned);
        await store.pinFile(pinned.project, pinned.id, 'batch_a');
        await store.deleteFile(pinned.project, pinned.id);
        await store.purgeDeletedFile(live.id);
        await store.purgeDeletedFile(pinned.id);
        expect(await store.getFile(live.project, live.id)).toEqual(live);
        expect(await store.getInputFile(pinned.project, pinned.id)).toEqual(pinned);
      });
    });

    describe('tenancy', () => {
      it("hides another project's file from get, list and delete", async () => {
        const file = fileRecord();
        const other = uid('proj');
        await store.putFile(file);
        await putFiles(other, 1);
        expect(await store.getFile(other, file.id)).toBeUndefined();
        const listed = await store.listFiles(other, { limit: 100, order: 'desc' });
        expect(listed.items.map((f) => f.id)).not.toContain(file.id);
        expect(await store.deleteFile(other, file.id)).toBeUndefined();
        expect(await store.getFile(file.project, file.id)).toEqual(file);
      });

      it("hides another project's batch from list", async () => {
        const mine = batchRecord();
        const theirs = batchRecord();
        await store.createBatch(mine);
        await store.createBatch(theirs);
        expect((await store.listBatches(mine.project, { limit: 10 })).items).toEqual([mine]);
        expect(await store.listBatches(mine.project, { limit: 10, after: theirs.id })).toEqual({
          items: [],
          hasMore: false,
        });
      });
    });

    describe('batches', () => {
      it('creates and gets a batch, exactly as given', async () => {
        const batch = batchRecord({
          model: 'gpt-4o-mini',
          metadata: { team: 'search', note: '' },
          outputExpiresAfterSeconds: 86_400,
          errors: [
            { code: 'invalid_json', message: 'line 3 is not JSON', param: null, line: 3 },
            { code: 'missing_custom_id', message: 'no custom_id', param: 'custom_id', line: null },
          ],
        });
        await store.createBatch(batch);
        expect(await store.getBatch(batch.id)).toEqual(batch);
        expect(await store.getBatch(uid('batch'))).toBeUndefined();
      });

      it("keeps a batch's dialect and auto-delete flag", async () => {
        const batch = batchRecord({ dialect: 'melious', autoDeleteInputFile: true });
        await store.createBatch(batch);
        expect(await store.getBatch(batch.id)).toEqual(batch);
      });

      it('refuses to create a batch twice', async () => {
        const batch = batchRecord();
        await store.createBatch(batch);
        await expect(store.createBatch({ ...batch, status: 'in_progress' })).rejects.toThrow();
        expect(await store.getBatch(batch.id)).toEqual(batch);
      });

      it('lists batches newest first, with pages', async () => {
        const project = uid('proj');
        const base = Date.now() - HOUR;
        const batches = Array.from({ length: 5 }, (_, i) => batchRecord({ project, createdAtMs: base + i }));
        for (const batch of [...batches].reverse()) await store.createBatch(batch);
        const newestFirst = batches.map((b) => b.id).reverse();

        const first = await store.listBatches(project, { limit: 3 });
        expect(first.items.map((b) => b.id)).toEqual(newestFirst.slice(0, 3));
        expect(first.hasMore).toBe(true);
        const second = await store.listBatches(project, { limit: 3, after: first.items.at(-1)!.id });
        expect(second.items.map((b) => b.id)).toEqual(newestFirst.slice(3));
        expect(second.hasMore).toBe(false);
      });

      it('filters a list by creation time, status, input file and a metadata substring, with pages', async () => {
        const project = uid('proj');
        const base = Date.UTC(2026, 0, 1);
        const name = (ds_name: string) => Object.assign(Object.create(null), { ds_name });
        const fileA = uid('file');
        const batches = [
          batchRecord({ project, createdAtMs: base, status: 'completed', metadata: name('weekly report') }),
          batchRecord({ project, createdAtMs: base + 1_000, status: 'failed', inputFileId: fileA, metadata: name('daily') }),
          batchRecord({ project, createdAtMs: base + 2_000, status: 'completed', inputFileId: fileA, metadata: name('Weekly Report') }),
          batchRecord({ project, createdAtMs: base + 3_000, status: 'in_progress', metadata: null }),
          batchRecord({ project, createdAtMs: base + 4_000, status: 'completed', metadata: name('my weekly job') }),
        ];
        for (const batch of batches) await store.createBatch(batch);
        await store.createBatch(batchRecord({ createdAtMs: base + 2_000, status: 'completed', inputFileId: fileA }));
        const ids = (page: { items: BatchRecord[] }) => page.items.map((b) => b.id);
        const of = (...indexes: number[]) => indexes.map((i) => batches[i]!.id);
        const list = (filter: BatchFilter, limit = 10, after?: string) =>
          store.listBatches(project, { limit, filter, ...(after ? { after } : {}) });

        expect(ids(await list({ createdAfterMs: base + 1_000, createdBeforeMs: base + 3_000 }))).toEqual(of(3, 2, 1));
        expect(ids(await list({ createdAfterMs: base + 3_500 }))).toEqual(of(4));
        expect(ids(await list({ createdBeforeMs: base + 999 }))).toEqual(of(0));
        expect(ids(await list({ statuses: ['completed', 'failed'] }))).toEqual(of(4, 2, 1, 0));
        expect(ids(await list({ inputFileIds: [fileA, uid('file')] }))).toEqual(of(2, 1));
        expect(ids(await list({ metadataContains: { key: 'ds_name', text: 'weekly' } }))).toEqual(of(4, 0));
        expect(
          ids(await list({ statuses: ['completed'], metadataContains: { key: 'ds_name', text: 'eekly' }, createdBeforeMs: base + 2_000 })),
        ).toEqual(of(2, 0));
        expect(ids(await list({ statuses: ['expired'] }))).toEqual([]);

        const first = await list({ statuses: ['completed'] }, 2);
        expect(ids(first)).toEqual(of(4, 2));
        expect(first.hasMore).toBe(true);
        const second = await list({ statuses: ['completed'] }, 2, first.items.at(-1)!.id);
        expect(ids(second)).toEqual(of(0));
        expect(second.hasMore).toBe(false);
        // A cursor above the time range starts at the range's top; one below it ends the list.
        expect(ids(await list({ createdBeforeMs: base + 1_000 }, 10, batches[4]!.id))).toEqual(of(1, 0));
        expect(await list({ createdAfterMs: base + 3_000 }, 10, batches[1]!.id)).toEqual({ items: [], hasMore: false });
      });

      it('updates while the status is one of those given, leaving the status alone', async () => {
        const batch = batchRecord();
        await store.createBatch(batch);
        const usage = { inputTokens: 1, cachedTokens: 2, outputTokens: 3, reasoningTokens: 4, totalTokens: 5 };
        const updated = await store.updateBatch(batch.id, ['validating'], {
          total: 40,
          chunkCount: 4,
          usage,
          errors: null,
          taskToken: 't',
        });
        const expected = { ...batch, total: 40, chunkCount: 4, usage, taskToken: 't' };
        expect(updated).toEqual(expected);
        expect(await store.getBatch(batch.id)).toEqual(expected);
      });

      it('changes nothing when the status does not match, or the batch is missing', async () => {
        const batch = batchRecord();
        await store.createBatch(batch);
        expect(await store.updateBatch(batch.id, ['in_progress', 'cancelling'], { taskToken: 't' })).toBeUndefined();
        expect(await store.getBatch(batch.id)).toEqual(batch);
        expect(await store.updateBatch(uid('batch'), ['validating'], { taskToken: 't' })).toBeUndefined();
        expect(await store.getBatch(batch.id)).toEqual(batch);
      });

      it('admits a running batch once, also when admissions race', async () => {
        const validating = batchRecord();
        await store.createBatch(validating);
        expect(await store.admitBatch(validating.id, 5)).toBeUndefined();
        expect(await store.admitBatch(uid('batch'), 5)).toBeUndefined();

        const running = batchRecord({ status: 'in_progress' });
        await store.createBatch(running);
        const admitted = await race([() => store.admitBatch(running.id, 7), () => store.admitBatch(running.id, 7)]);
        expect(admitted.filter(Boolean)).toEqual([{ ...running, admittedAtMs: 7 }]);
        expect(await store.admitBatch(running.id, 9)).toBeUndefined();
        expect((await store.getBatch(running.id))?.admittedAtMs).toBe(7);
      });

      it('round-trips nulls set by an update', async () => {
        const batch = batchRecord({ metadata: { a: 'b' }, model: 'm' });
        await store.createBatch(batch);
        const updated = await store.updateBatch(batch.id, ['validating'], { metadata: null, model: null });
        expect(updated).toEqual({ ...batch, metadata: null, model: null });
      });
    });

    describe('recordChunk', () => {
      it('adds a chunk once; the second time is a duplicate', async () => {
        const batch = await inProgressBatch();
        const first = await store.recordChunk(batch.id, outcome(0));
        expect(first.recorded).toBe(true);
        if (!first.recorded) return;
        expect(first.batch).toMatchObject({
          completed: 3,
          failed: 1,
          unrun: 0,
          usage: { inputTokens: 10, cachedTokens: 2, outputTokens: 5, reasoningTokens: 1, totalTokens: 15 },
          doneChunks: [0],
          chunkAttempts: { '0': 'attempt-0' },
        });

        const again = await store.recordChunk(batch.id, outcome(0, { attempt: 'second-run' }));
        expect(again).toEqual({ recorded: false, reason: 'duplicate' });
        expect(await store.getBatch(batch.id)).toEqual(first.batch);
      });

      it('counts unrun lines inside failed, not on top of it', async () => {
        const batch = await inProgressBatch({ status: 'cancelling' });
        const result = await store.recordChunk(batch.id, outcome(1, { completed: 2, failed: 5, unrun: 4 }));
        expect(result.recorded && result.batch).toMatchObject({ completed: 2, failed: 5, unrun: 4 });
      });

      it('refuses a chunk of a batch that no longer takes results', async () => {
        for (const status of ['validating', 'finalizing', 'completed', 'cancelled'] as const) {
          const batch = batchRecord({ status });
          await store.createBatch(batch);
          expect(await store.recordChunk(batch.id, outcome(0))).toEqual({ recorded: false, reason: 'closed' });
          expect(await store.getBatch(batch.id)).toEqual(batch);
        }
      });

      it('reports a missing batch, and creates nothing', async () => {
        const id = uid('batch');
        expect(await store.recordChunk(id, outcome(0))).toEqual({ recorded: false, reason: 'missing' });
        expect(await store.getBatch(id)).toBeUndefined();
      });

      it('round-trips doneChunks and chunkAttempts', async () => {
        const batch = await inProgressBatch();
        expect(await store.getBatch(batch.id)).toMatchObject({ doneChunks: [], chunkAttempts: {} });
        await store.recordChunk(batch.id, outcome(7, { attempt: 'a7' }));
        await store.recordChunk(batch.id, outcome(2, { attempt: 'a2' }));
        await store.recordChunk(batch.id, outcome(11, { attempt: 'a11' }));
        expect(await store.getBatch(batch.id)).toMatchObject({
          doneChunks: [2, 7, 11],
          chunkAttempts: { '2': 'a2', '7': 'a7', '11': 'a11' },
        });
        // And a batch created with chunks already done keeps them.
        const seeded = batchRecord({ doneChunks: [0, 3], chunkAttempts: { '0': 'x', '3': 'y' } });
        await store.createBatch(seeded);
        expect(await store.getBatch(seeded.id)).toEqual(seeded);
      });

      it('counts 20 chunks recorded in parallel exactly once each', async () => {
        const batch = await inProgressBatch();
        const indexes = Array.from({ length: 20 }, (_, i) => i);
        // Each chunk twice, all at once: a redelivery racing the first delivery.
        const results = await race([...indexes, ...indexes].map((i) => () => store.recordChunk(batch.id, outcome(i))));
        expect(results.filter((r) => r.recorded)).toHaveLength(20);
        expect(results.filter((r) => !r.recorded && r.reason === 'duplicate')).toHaveLength(20);
        const after = await store.getBatch(batch.id);
        expect(after).toMatchObject({
          completed: 60,
          failed: 20,
          usage: { inputTokens: 200, cachedTokens: 40, outputTokens: 100, reasoningTokens: 20, totalTokens: 300 },
          doneChunks: indexes,
        });
        expect(Object.keys(after!.chunkAttempts)).toHaveLength(20);
      });
    });

    it('lists unfinished batches across projects', async () => {
      const statuses = ['validating', 'in_progress', 'finalizing', 'cancelling', 'failed', 'completed', 'expired', 'cancelled'] as const;
      const batches = statuses.map((status) => batchRecord({ status }));
      for (const batch of batches) await store.createBatch(batch);
      await store.putFile(fileRecord());

      const unfinished = await store.listUnfinishedBatches();
      const ours = new Set(batches.map((b) => b.id));
      const found = unfinished.filter((b) => ours.has(b.id));
      expect(found.map((b) => b.status).sort()).toEqual(['cancelling', 'finalizing', 'in_progress', 'validating']);
      expect(found).toContainEqual(batches[1]);
      expect(unfinished.every((b) => !['failed', 'completed', 'expired', 'cancelled'].includes(b.status))).toBe(true);
    });

    it('lists the unfinished batches of one project, oldest first', async () => {
      const project = uid('proj');
      const base = Date.now() - HOUR;
      const batches = (['in_progress', 'completed', 'validating', 'cancelling'] as const).map((status, i) =>
        batchRecord({ project, status, createdAtMs: base + i * 1000 }),
      );
      for (const batch of [...batches].reverse()) await store.createBatch(batch);
      await store.createBatch(batchRecord({ status: 'in_progress' }));
      expect((await store.listUnfinishedBatches(project)).map((b) => b.status)).toEqual(['in_progress', 'validating', 'cancelling']);
    });

    describe('status changes and the outbox', () => {
      const pendingOf = async (batchId: string) =>
        (await store.listPendingEvents(1_000)).find((pending) => pending.batch.id === batchId)?.events ?? [];

      it('changes the status, sets the changes and appends the event in one write', async () => {
        const batch = batchRecord();
        const created = batchEvent(batch, 'validating', null, batch.createdAtMs);
        await store.createBatch(batch, created);
        const started = batchEvent(batch, 'in_progress', 'validating', batch.createdAtMs + 5);
        const moved = await store.transitionBatch(batch.id, {
          from: 'validating',
          to: 'in_progress',
          changes: { inProgressAtMs: started.atMs, total: 7, model: 'm' },
          event: started,
        });
        const expected = { ...batch, status: 'in_progress', inProgressAtMs: started.atMs, total: 7, model: 'm' };
        expect(moved).toEqual(expected);
        expect(await store.getBatch(batch.id)).toEqual(expected);
        expect(await pendingOf(batch.id)).toEqual([created, started]);
      });

      it('throws a conflict carrying the current batch, and changes nothing, when the status moved on', async () => {
        const batch = await inProgressBatch();
        const change = (to: 'cancelling' | 'finalizing') => ({
          from: 'in_progress' as const,
          to,
          changes: {},
          event: batchEvent(batch, to, 'in_progress', Date.now()),
        });
        const settle = <T>(promise: Promise<T>) =>
          promise.then(
            (value) => ({ status: 'fulfilled' as const, value }),
            (reason: unknown) => ({ status: 'rejected' as const, reason }),
          );
        const results = await race([
          () => settle(store.transitionBatch(batch.id, change('cancelling'))),
          () => settle(store.transitionBatch(batch.id, change('finalizing'))),
        ]);
        const won = results.filter((r) => r.status === 'fulfilled');
        const lost = results.filter((r) => r.status === 'rejected');
        expect(won).toHaveLength(1);
        const conflict = lost[0]!.reason as BatchStatusConflict;
        expect(conflict).toBeInstanceOf(BatchStatusConflict);
        expect(conflict.current?.status).toBe(won[0]!.value.status);
        expect(await pendingOf(batch.id)).toHaveLength(1);
      });

      it('throws a conflict with no current batch for an unknown id, creating nothing', async () => {
        const id = uid('batch');
        const event = batchEvent({ id, project: 'p' }, 'failed', 'validating', 1);
        await expect(store.transitionBatch(id, { from: 'validating', to: 'failed', changes: {}, event })).rejects.toMatchObject({
          name: 'BatchStatusConflict',
          current: undefined,
        });
        expect(await store.getBatch(id)).toBeUndefined();
      });

      it('keeps a final batch out of the unfinished ones', async () => {
        const batch = batchRecord({ status: 'finalizing' });
        await store.createBatch(batch);
        await store.transitionBatch(batch.id, {
          from: 'finalizing',
          to: 'completed',
          changes: {},
          event: batchEvent(batch, 'completed', 'finalizing', 1),
        });
        expect((await store.listUnfinishedBatches(batch.project)).map((b) => b.id)).toEqual([]);
      });

      it('acknowledges the oldest events, keeping those that came after them', async () => {
        const batch = batchRecord();
        const events = [batchEvent(batch, 'validating', null, 1), batchEvent(batch, 'in_progress', 'validating', 2)];
        await store.createBatch(batch, events[0]);
        await store.transitionBatch(batch.id, { from: 'validating', to: 'in_progress', changes: {}, event: events[1]! });
        await store.ackEvents(batch.id, [events[0]!.id]);
        expect(await pendingOf(batch.id)).toEqual([events[1]]);
        const finalizing = batchEvent(batch, 'finalizing', 'in_progress', 3);
        await store.transitionBatch(batch.id, { from: 'in_progress', to: 'finalizing', changes: {}, event: finalizing });
        await store.ackEvents(batch.id, [events[1]!.id, finalizing.id]);
        expect(await pendingOf(batch.id)).toEqual([]);
        // An ack of events already acknowledged (a second dispatcher) changes nothing.
        await store.ackEvents(batch.id, [events[0]!.id]);
        const cancelled = await store.getBatch(batch.id);
        expect(cancelled?.status).toBe('finalizing');
      });
    });

    describe('uploads', () => {
      const upload = (overrides: Partial<UploadRecord> = {}): UploadRecord => ({
        id: `upload_${Math.random().toString(36).slice(2)}`,
        project: 'alpha',
        filename: 'big.jsonl',
        purpose: 'batch',
        bytes: 10,
        mimeType: 'application/jsonl',
        status: 'pending',
        createdAtMs: 1_000,
        expiresAtMs: 3_601_000,
        fileExpiresAfterSeconds: null,
        fileId: null,
        ...overrides,
      });

      it('stores uploads per project and changes their status by compare-and-set', async () => {
        const record = upload();
        await store.createUpload(record);
        expect(await store.getUpload('alpha', record.id)).toEqual(record);
        expect(await store.getUpload('beta', record.id)).toBeUndefined();
        await expect(store.createUpload(record)).rejects.toThrow();

        const completed = await store.updateUpload(record.id, ['pending'], { status: 'completed', fileId: 'file-1' });
        expect(completed).toEqual({ ...record, status: 'completed', fileId: 'file-1' });
        expect(await store.updateUpload(record.id, ['pending'], { status: 'cancelled' })).toBeUndefined();
        expect(await store.updateUpload('upload_missing', ['pending'], { status: 'cancelled' })).toBeUndefined();
      });

      it('claims a pending upload for one completion at a time, until the claim runs out', async () => {
        const record = upload();
        await store.createUpload(record);
        const claimed = await store.claimUploadCompletion(record.id, 10_000, 20_000);
        expect(claimed).toEqual({ ...record, completingUntilMs: 20_000 });
        expect(await store.getUpload('alpha', record.id)).toEqual(claimed);
        // A live claim refuses another, up to the moment it runs out.
        expect(await store.claimUploadCompletion(record.id, 19_999, 40_000)).toBeUndefined();
        const taken = await store.claimUploadCompletion(record.id, 20_000, 50_000);
        expect(taken?.completingUntilMs).toBe(50_000);

        // Releasing a claim that is no longer this one leaves the current claim alone.
        await store.releaseUploadCompletion(record.id, 20_000);
        expect((await store.getUpload('alpha', record.id))?.completingUntilMs).toBe(50_000);
        await store.releaseUploadCompletion(record.id, 50_000);
        expect(await store.getUpload('alpha', record.id)).toEqual(record);
        expect(await store.claimUploadCompletion(record.id, 21_000, 60_000)).toMatchObject({ completingUntilMs: 60_000 });

        await store.updateUpload(record.id, ['pending'], { status: 'cancelled' });
        expect(await store.claimUploadCompletion(record.id, 100_000, 200_000)).toBeUndefined();
        expect(await store.claimUploadCompletion('upload_missing', 100_000, 200_000)).toBeUndefined();
      });

      it('counts part bytes toward a pending upload only while they fit, also when parts race', async () => {
        const record = upload({ bytes: 100 });
        await store.createUpload(record);
        expect(await store.addUploadPartBytes(record.id, 101, 100)).toBeUndefined();
        expect(await store.addUploadPartBytes(record.id, 60, 100)).toMatchObject({ partBytes: 60 });
        expect(await store.addUploadPartBytes(record.id, 41, 100)).toBeUndefined();
        expect(await store.addUploadPartBytes(record.id, 40, 100)).toMatchObject({ partBytes: 100 });
        expect(await store.addUploadPartBytes(record.id, 1, 100)).toBeUndefined();
        // A count given back makes room again.
        expect(await store.addUploadPartBytes(record.id, -40, 100)).toMatchObject({ partBytes: 60 });

        // Ten parts of 30 bytes at once into 100 bytes: exactly three fit.
        const racing = upload({ bytes: 100 });
        await store.createUpload(racing);
        const counted = await race(Array.from({ length: 10 }, () => () => store.addUploadPartBytes(racing.id, 30, 100)));
        expect(counted.filter(Boolean)).toHaveLength(3);
        expect((await store.getUpload('alpha', racing.id))?.partBytes).toBe(90);

        await store.updateUpload(record.id, ['pending'], { status: 'cancelled' });
        expect(await store.addUploadPartBytes(record.id, 1, 100)).toBeUndefined();
        expect(await store.addUploadPartBytes('upload_missing', 1, 100)).toBeUndefined();
        expect(await store.addUploadPartBytes('upload_missing', -1, 100)).toBeUndefined();
      });

      it('stores parts by upload', async () => {
        const part: UploadPartRecord = {
          id: 'part_1',
          uploadId: 'upload_x',
          project: 'alpha',
          bytes: 5,
          createdAtMs: 2_000,
          blobKey: 'uploads/upload_x/part_1',
        };
        await store.putUploadPart(part);
        expect(await store.getUploadPart('upload_x', 'part_1')).toEqual(part);
        expect(await store.getUploadPart('upload_y', 'part_1')).toBeUndefined();
        const summarized: UploadPartRecord = {
          ...part,
          id: 'part_2',
          blobKey: 'uploads/upload_x/part_2',
          summary: {
            maxLineBytes: 4096,
            nul: -1,
            newlines: 2,
            lead: [0x7b, 0x7d, 0x0a],
            head: { bytes: 2, lastNonBlank: 1, endsWithCR: false },
            tail: { bytes: 0, lastNonBlank: -1, endsWithCR: false },
            requests: 0,
            firstRequest: null,
            longLines: [],
            longLineCount: 0,
          },
        };
        await store.putUploadPart(summarized);
        expect(await store.getUploadPart('upload_x', 'part_2')).toEqual(summarized);
      });
    });

    describe('signing keys', () => {
      it('stores an encrypted secret by its id, once', async () => {
        const key = { id: randomUUID().replaceAll('-', ''), encryptedSecret: 'AQICAHh…base64', createdAtMs: 1_000 };
        await store.putSigningKey(key);
        expect(await store.getSigningKey(key.id)).toEqual(key);
        await expect(store.putSigningKey({ ...key, encryptedSecret: 'other' })).rejects.toThrow();
        expect(await store.getSigningKey(key.id)).toEqual(key);
        expect(await store.getSigningKey(randomUUID().replaceAll('-', ''))).toBeUndefined();
      });
    });

    describe('api keys', () => {
      it('stores keys by hash, lists them by project, and revokes once', async () => {
        const suffix = Math.random().toString(36).slice(2);
        const a: ApiKeyRecord = {
          keyHash: `hash-a-${suffix}`,
          project: `p-${suffix}`,
          prefix: 'sk-ab',
          createdAtMs: 1_000,
          revokedAtMs: null,
        };
        const b: ApiKeyRecord = {
          keyHash: `hash-b-${suffix}`,
          project: `q-${suffix}`,
          prefix: 'sk-cd',
          createdAtMs: 2_000,
          revokedAtMs: null,
        };
        await store.putApiKey(a);
        await store.putApiKey(b);
        expect(await store.getApiKey(a.keyHash)).toEqual(a);
        expect(await store.listApiKeys(a.project)).toEqual([a]);
        expect((await store.listApiKeys()).map((k) => k.keyHash)).toEqual(expect.arrayContaining([a.keyHash, b.keyHash]));
        expect(await store.revokeApiKey(a.keyHash, 5_000)).toEqual({ ...a, revokedAtMs: 5_000 });
        expect((await store.revokeApiKey(a.keyHash, 9_000))!.revokedAtMs).toBe(5_000);
        expect(await store.revokeApiKey('no-such-hash', 1)).toBeUndefined();
      });
    });

    describe('webhook endpoints', () => {
      it('stores, lists newest first with a cursor, updates and deletes endpoints of one project', async () => {
        const project = uid('proj');
        const base = Date.now() - HOUR;
        const endpoints = Array.from({ length: 5 }, (_, i) => webhookEndpointRecord({ project, createdAtMs: base + i * 1000 }));
        for (const endpoint of endpoints) await store.createWebhookEndpoint(endpoint);
        await store.createWebhookEndpoint(webhookEndpointRecord()); // another project's
        await expect(store.createWebhookEndpoint(endpoints[0]!)).rejects.toThrow();

        expect(await store.getWebhookEndpoint(project, endpoints[2]!.id)).toEqual(endpoints[2]);
        const first = await store.listWebhookEndpoints(project, { limit: 3 });
        expect(first.items.map((e) => e.id)).toEqual([endpoints[4]!.id, endpoints[3]!.id, endpoints[2]!.id]);
        expect(first.hasMore).toBe(true);
        const second = await store.listWebhookEndpoints(project, { limit: 3, after: endpoints[2]!.id });
        expect(second.items.map((e) => e.id)).toEqual([endpoints[1]!.id, endpoints[0]!.id]);
        expect(second.hasMore).toBe(false);

        const updated = await store.updateWebhookEndpoint(project, endpoints[0]!.id, {
          name: 'renamed',
          eventTypes: ['batch.failed', 'batch.expired'],
          previousSecret: endpoints[0]!.secret,
          previousSecretExpiresAtMs: 5_000,
          updatedAtMs: 9_000,
        });
        expect(updated).toEqual({
          ...endpoints[0],
          name: 'renamed',
          eventTypes: ['batch.failed', 'batch.expired'],
          previousSecret: endpoints[0]!.secret,
          previousSecretExpiresAtMs: 5_000,
          updatedAtMs: 9_000,
        });
        expect(await store.updateWebhookEndpoint(project, newWebhookEndpointId(), { name: 'x' })).toBeUndefined();

        expect(await store.deleteWebhookEndpoint(project, endpoints[1]!.id)).toEqual(endpoints[1]);
        expect(await store.deleteWebhookEndpoint(project, endpoints[1]!.id)).toBeUndefined();
        expect(await store.getWebhookEndpoint(project, endpoints[1]!.id)).toBeUndefined();
      });

      it("answers another project's endpoint as missing, for every operation", async () => {
        const endpoint = webhookEndpointRecord();
        await store.createWebhookEndpoint(endpoint);
        const other = uid('proj');
        expect(await store.getWebhookEndpoint(other, endpoint.id)).toBeUndefined();
        expect((await store.listWebhookEndpoints(other, { limit: 10 })).items).toEqual([]);
        expect((await store.listWebhookEndpoints(other, { limit: 10, after: endpoint.id })).items).toEqual([]);
        expect(await store.updateWebhookEndpoint(other, endpoint.id, { name: 'taken' })).toBeUndefined();
        expect(await store.deleteWebhookEndpoint(other, endpoint.id)).toBeUndefined();
        expect(await store.getWebhookEndpoint(endpoint.project, endpoint.id)).toEqual(endpoint);
      });
    });

    describe('webhook deliveries', () => {
      const delivery = (overrides: Partial<WebhookDeliveryRecord> = {}): WebhookDeliveryRecord => ({
        id: `whd_${randomUUID().replaceAll('-', '').slice(0, 24)}`,
        project: uid('proj'),
        endpointId: newWebhookEndpointId(),
        eventId: 'evt_1',
        eventType: 'batch.completed',
        payload: '{"id":"evt_1"}',
        attempts: 0,
        nextAttemptAtMs: 1_000,
        createdAtMs: 1_000,
        lastError: null,
        ...overrides,
      });

      it('records a delivery once, lists it when due, claims it once, retries and finishes it', async () => {
        // Times far in the past, apart from any other test's deliveries.
        const t = 1_000_000 + Math.floor(Math.random() * 1_000_000) * 10;
        const d = delivery({ nextAttemptAtMs: t, createdAtMs: t });
        expect(await store.putWebhookDelivery(d)).toBe(true);
        expect(await store.putWebhookDelivery({ ...d, payload: 'other' })).toBe(false);
        expect(await store.getWebhookDelivery(d.id)).toEqual(d);

        expect((await store.listDueWebhookDeliveries(t - 1, 1000)).map((x) => x.id)).not.toContain(d.id);
        expect((await store.listDueWebhookDeliveries(t, 1000)).map((x) => x.id)).toContain(d.id);

        const claims = await race([() => store.claimWebhookDelivery(d.id, t, t + 5), () => store.claimWebhookDelivery(d.id, t, t + 5)]);
        expect(claims.filter(Boolean)).toHaveLength(1);
        expect(claims.find(Boolean)!.nextAttemptAtMs).toBe(t + 5);
        // Claimed: not due again until the claim lapses.
        expect(await store.claimWebhookDelivery(d.id, t + 1, t + 10)).toBeUndefined();

        await store.retryWebhookDelivery(d.id, { attempts: 1, nextAttemptAtMs: t + 3, lastError: 'HTTP 503' });
        expect(await store.getWebhookDelivery(d.id)).toEqual({ ...d, attempts: 1, nextAttemptAtMs: t + 3, lastError: 'HTTP 503' });
        expect((await store.listDueWebhookDeliveries(t + 3, 1000)).map((x) => x.id)).toContain(d.id);

        await store.finishWebhookDelivery(d.id);
        await store.finishWebhookDelivery(d.id);
        expect(await store.getWebhookDelivery(d.id)).toBeUndefined();
        expect(await store.claimWebhookDelivery(d.id, t + 100, t + 200)).toBeUndefined();
        await store.retryWebhookDelivery(d.id, { attempts: 2, nextAttemptAtMs: t + 9, lastError: 'late' });
        expect(await store.getWebhookDelivery(d.id)).toBeUndefined();
      });

      it('pages through the due deliveries with a cursor', async () => {
        const t = 3_000_000 + Math.floor(Math.random() * 1_000_000) * 10;
        const made = [0, 1, 2].map((i) => delivery({ nextAttemptAtMs: t + i, createdAtMs: t }));
        for (const d of made) await store.putWebhookDelivery(d);
        const ids = new Set(made.map((d) => d.id));
        const seen: string[] = [];
        let after: WebhookDeliveryRecord | undefined;
        for (let page = 0; page < 1000; page++) {
          const due = await store.listDueWebhookDeliveries(t + 2, 2, after);
          if (due.length === 0) break;
          seen.push(...due.map((d) => d.id).filter((id) => ids.has(id)));
          after = due.at(-1);
        }
        expect(seen).toEqual(made.map((d) => d.id));
        for (const d of made) await store.finishWebhookDelivery(d.id);
      });

      it('keeps the events outbox and the delivery outbox apart', async () => {
        const d = delivery({ nextAttemptAtMs: 50, createdAtMs: 50 });
        await store.putWebhookDelivery(d);
        const pending = await store.listPendingEvents(1000);
        expect(pending.map((p) => p.batch.id)).not.toContain(d.id);
        await store.finishWebhookDelivery(d.id);
      });
    });
  });
}
