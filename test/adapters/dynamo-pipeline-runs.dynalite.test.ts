import { DynamoPipelineRunStore } from '../../shared/adapters/aws/dynamo-pipeline-runs.js';
import { startEmbeddedDynamo } from '../../shared/adapters/local/embedded-dynamo.js';
import { pipelineRunStoreContract } from './pipeline-run-store-contract.js';

pipelineRunStoreContract('DynamoPipelineRunStore on dynalite', async () => {
  const dynamo = await startEmbeddedDynamo({ tableName: `runs-${process.pid}-${Date.now()}` });
  return { store: new DynamoPipelineRunStore({ client: dynamo.client, tableName: dynamo.tableName }), close: dynamo.close };
});
