import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetCommand } from '@aws-sdk/lib-dynamodb';
import { describe, expect, it } from 'vitest';
import { DynamoMetaStore, TTL_ATTRIBUTE } from '../../shared/adapters/aws/dynamo-meta-store.js';
import { startEmbeddedDynamo } from '../../shared/adapters/local/embedded-dynamo.js';
import { batchRecord, fileRecord, metaStoreContract } from './meta-store-contract.js';

metaStoreContract('DynamoMetaStore on dynalite', async () => {
  const dynamo = await startEmbeddedDynamo({ tableName: `meta-${process.pid}-${Date.now()}` });
  return { store: new DynamoMetaStore({ client: dynamo.client, tableName: dynamo.tableName }), close: dynamo.close };
});

describe('startEmbeddedDynamo', () => {
  it('keeps the table and its items across a restart on the same path', async () => {
    const path = await mkdtemp(join(tmpdir(), 'embedded-dynamo-'));
    try {
      const batch = batchRecord();
      const file = fileRecord();

      const first = await startEmbeddedDynamo({ path: join(path, 'meta') });
      const firstStore = new DynamoMetaStore({ client: first.client, tableName: first.tableName });
      await firstStore.createBatch(batch);
      await firstStore.putFile(file);
      await first.close();

      const second = await startEmbeddedDynamo({ path: join(path, 'meta') });
      try {
        expect(second.tableName).toBe('batch-meta');
        const secondStore = new DynamoMetaStore({ client: second.client, tableName: second.tableName });
        expect(await secondStore.getBatch(batch.id)).toEqual(batch);
        expect((await secondStore.listFiles(file.project, { limit: 10, order: 'desc' })).items).toEqual([file]);
      } finally {
        await second.close();
      }
    } finally {
      await rm(path, { recursive: true, force: true });
    }
  });

  it('treats a file as expired by the injected clock', async () => {
    const dynamo = await startEmbeddedDynamo({});
    try {
      let now = 1_000_000;
      const store = new DynamoMetaStore({ client: dynamo.client, tableName: dynamo.tableName, now: () => now });
      const file = fileRecord({ createdAtMs: now, expiresAtMs: now + 1000 });
      await store.putFile(file);
      expect(await store.getFile(file.project, file.id)).toEqual(file);
      now += 1000;
      expect(await store.getFile(file.project, file.id)).toBeUndefined();
      expect((await store.listFiles(file.project, { limit: 10, order: 'desc' })).items).toEqual([]);
    } finally {
      await dynamo.close();
    }
  });

  it("moves a pinned file's TTL out to the batch's latest end, never in; a file that never expires gets none", async () => {
    const dynamo = await startEmbeddedDynamo({});
    try {
      const store = new DynamoMetaStore({ client: dynamo.client, tableName: dynamo.tableName });
      const ttlOf = async (id: string) =>
        (await dynamo.client.send(new GetCommand({ TableName: dynamo.tableName, Key: { pk: `FILE#${id}` } }))).Item?.[TTL_ATTRIBUTE];
      const now = Date.now();
      const file = fileRecord({ createdAtMs: now, expiresAtMs: now + 60_000 });
      await store.putFile(file);
      expect(await ttlOf(file.id)).toBe(Math.ceil((now + 60_000) / 1000));
      expect(await store.pinFile(file.project, file.id, 'batch_late', now + 10 * 86_400_000)).toEqual(file);
      expect(await ttlOf(file.id)).toBe(Math.ceil((now + 10 * 86_400_000) / 1000));
      expect(await store.pinFile(file.project, file.id, 'batch_soon', now + 86_400_000)).toEqual(file);
      expect(await ttlOf(file.id)).toBe(Math.ceil((now + 10 * 86_400_000) / 1000));
      const forever = fileRecord({ createdAtMs: now, expiresAtMs: null });
      await store.putFile(forever);
      expect(await store.pinFile(forever.project, forever.id, 'batch_x', now + 86_400_000)).toEqual(forever);
      expect(await ttlOf(forever.id)).toBeUndefined();
    } finally {
      await dynamo.close();
    }
  });
});
