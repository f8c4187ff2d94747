// The DynamoDB MetaStore against moto_server, which implements DynamoDB's protocol and enforces its
// limits (400 KB items, 2 KB partition keys, expression rules) where dynalite does not.

import { CreateTableCommand } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DynamoMetaStore, metaTableDefinition } from '../../shared/adapters/aws/dynamo-meta-store.js';
import { batchEvent } from '../../shared/events/model.js';
import { MOTO_SERVER, type MotoServer, motoSkipNotice, startMoto } from '../support/moto.js';
import { batchRecord, metaStoreContract } from './meta-store-contract.js';

async function storeOn(moto: MotoServer): Promise<DynamoMetaStore> {
  const client = moto.dynamo();
  const tableName = `meta-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
  await client.send(new CreateTableCommand(metaTableDefinition(tableName)));
  return new DynamoMetaStore({ client, tableName });
}

if (!MOTO_SERVER) {
  motoSkipNotice('the DynamoDB MetaStore contract');
} else {
  metaStoreContract('DynamoMetaStore on moto', async () => {
    const moto = await startMoto();
    // moto's threaded server applies concurrent writes to one item without serializing them: it
    // loses ADDs, and two conditional updates can both pass (DynamoDB serializes writes to an item).
    // The racing cases run their writes one at a time here, with the same exact expectations;
    // dynalite runs them racing.
    return { store: await storeOn(moto), close: moto.close, serializeWritesToOneItem: true };
  });

  describe('DynamoMetaStore on moto, at DynamoDB limits', () => {
    let moto: MotoServer;
    let store: DynamoMetaStore;
    beforeAll(async () => {
      moto = await startMoto();
      store = await storeOn(moto);
    });
    afterAll(async () => {
      await moto?.close();
    });

    it('refuses a partition key over 2,048 bytes', async () => {
      await expect(store.createBatch(batchRecord({ id: 'b'.repeat(2_100) }))).rejects.toThrow(/2048/);
    });

    it('refuses an item over 400 KB, as DynamoDB does, and keeps the batch as it was', async () => {
      const batch = batchRecord({ status: 'validating' });
      await store.createBatch(batch);
      // 1,000 errors quoting 80 CJK characters each: about 570 KiB, what a failed validation once wrote.
      const quote = '模'.repeat(80);
      const errors = Array.from({ length: 1_000 }, (_, i) => ({
        code: 'model_mismatch',
        message: `${quote} ${quote}`,
        param: null,
        line: i + 1,
      }));
      const event = batchEvent(batch, 'failed', 'validating', Date.now());
      await expect(store.transitionBatch(batch.id, { from: 'validating', to: 'failed', changes: { errors }, event })).rejects.toThrow(
        /Item size to update has exceeded the maximum allowed size/,
      );
      // DynamoDB changes nothing when it refuses an update; moto applies the attributes that fit
      // (here `status`) before refusing the rest, so what the item holds afterwards is not asserted.
      expect((await store.getBatch(batch.id))?.errors).toBeNull();
    });
  });
}
