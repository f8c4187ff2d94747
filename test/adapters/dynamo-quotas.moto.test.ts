// The quota counters' conditional writes against moto_server (DynamoDB's protocol as AWS checks it).
import { CreateTableCommand } from '@aws-sdk/client-dynamodb';
import { metaTableDefinition } from '../../shared/adapters/aws/dynamo-meta-store.js';
import { DynamoQuotaStore } from '../../shared/adapters/aws/dynamo-quotas.js';
import { MOTO_SERVER, motoSkipNotice, startMoto } from '../support/moto.js';
import { quotaStoreContract } from './quota-store-contract.js';

if (!MOTO_SERVER) {
  motoSkipNotice('the DynamoDB QuotaStore contract');
} else {
  quotaStoreContract('DynamoQuotaStore on moto', async () => {
    const moto = await startMoto();
    const client = moto.dynamo();
    const tableName = `quotas-${process.pid}-${Date.now()}`;
    await client.send(new CreateTableCommand(metaTableDefinition(tableName)));
    return { store: new DynamoQuotaStore({ client, tableName }), close: moto.close, serializeWritesToOneItem: true };
  });
}
