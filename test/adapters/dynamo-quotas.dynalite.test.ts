import { DynamoQuotaStore } from '../../shared/adapters/aws/dynamo-quotas.js';
import { startEmbeddedDynamo } from '../../shared/adapters/local/embedded-dynamo.js';
import { quotaStoreContract } from './quota-store-contract.js';

quotaStoreContract('DynamoQuotaStore on dynalite', async () => {
  const dynamo = await startEmbeddedDynamo({ tableName: `quotas-${process.pid}-${Date.now()}` });
  return { store: new DynamoQuotaStore({ client: dynamo.client, tableName: dynamo.tableName }), close: dynamo.close };
});
