// The pipeline runs' conditional writes against moto_server, which implements DynamoDB's protocol
// (ReturnValuesOnConditionCheckFailure included) where dynalite does not.
import { CreateTableCommand } from '@aws-sdk/client-dynamodb';
import { metaTableDefinition } from '../../shared/adapters/aws/dynamo-meta-store.js';
import { DynamoPipelineRunStore } from '../../shared/adapters/aws/dynamo-pipeline-runs.js';
import { MOTO_SERVER, motoSkipNotice, startMoto } from '../support/moto.js';
import { pipelineRunStoreContract } from './pipeline-run-store-contract.js';

if (!MOTO_SERVER) {
  motoSkipNotice('the DynamoDB PipelineRunStore contract');
} else {
  pipelineRunStoreContract(
    'DynamoPipelineRunStore on moto',
    async () => {
      const moto = await startMoto();
      const client = moto.dynamo();
      const tableName = `runs-${process.pid}-${Date.now()}`;
      await client.send(new CreateTableCommand(metaTableDefinition(tableName)));
      return { store: new DynamoPipelineRunStore({ client, tableName }), close: moto.close };
    },
    { serializeWritesToOneItem: true },
  );
}
