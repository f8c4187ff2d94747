// An embedded DynamoDB (dynalite, on LevelDB) for `npm start` and the tests, so the local runtime
// runs the very same DynamoMetaStore as AWS. dynalite has no transactions, TTL or streams, which
// the store does not need.
import { mkdir } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { CreateTableCommand, DescribeTableCommand, DynamoDBClient, UpdateTableCommand } from '@aws-sdk/client-dynamodb';
import dynalite from 'dynalite';
import { metaTableDefinition } from '../aws/dynamo-meta-store.js';

export interface EmbeddedDynamo {
  client: DynamoDBClient;
  tableName: string;
  endpoint: string;
  close(): Promise<void>;
}

/** Starts dynalite on 127.0.0.1 (a free port), in memory unless `path` names a directory. */
export async function startEmbeddedDynamo(options: { path?: string; tableName?: string } = {}): Promise<EmbeddedDynamo> {
  const tableName = options.tableName ?? 'batch-meta';
  if (options.path !== undefined) await mkdir(options.path, { recursive: true });

  const server = dynalite({ path: options.path, createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const endpoint = `http://127.0.0.1:${port}`;

  const client = new DynamoDBClient({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    // Nothing throttles locally; retries only cover a dropped connection.
    maxAttempts: 3,
  });

  const close = async () => {
    client.destroy();
    await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
  };

  try {
    await ensureTable(client, tableName);
  } catch (err) {
    await close();
    throw err;
  }
  return { client, tableName, endpoint, close };
}

async function ensureTable(client: DynamoDBClient, tableName: string): Promise<void> {
  const definition = metaTableDefinition(tableName);
  try {
    await client.send(new CreateTableCommand(definition));
  } catch (err) {
    // The table survives restarts when dynalite keeps its data on disk.
    if (!(err instanceof Error && err.name === 'ResourceInUseException')) throw err;
    await addMissingIndexes(client, definition);
  }
  await untilActive(client, tableName);
}

/**
 * A table kept on disk by an older version lacks the indexes added since: add them. Items written
 * before are not in them (an upgrade with batches running resumes only those started after it).
 */
async function addMissingIndexes(client: DynamoDBClient, definition: ReturnType<typeof metaTableDefinition>): Promise<void> {
  const { Table } = await client.send(new DescribeTableCommand({ TableName: definition.TableName }));
  const present = new Set((Table?.GlobalSecondaryIndexes ?? []).map((index) => index.IndexName));
  for (const index of definition.GlobalSecondaryIndexes ?? []) {
    if (present.has(index.IndexName)) continue;
    await untilActive(client, definition.TableName!);
    await client.send(
      new UpdateTableCommand({
        TableName: definition.TableName,
        AttributeDefinitions: definition.AttributeDefinitions,
        GlobalSecondaryIndexUpdates: [{ Create: { IndexName: index.IndexName, KeySchema: index.KeySchema, Projection: index.Projection } }],
      }),
    );
  }
}

async function untilActive(client: DynamoDBClient, tableName: string): Promise<void> {
  // Even with createTableMs 0, dynalite flips the table to ACTIVE on a later tick.
  for (let tries = 0; tries < 500; tries++) {
    const { Table } = await client.send(new DescribeTableCommand({ TableName: tableName }));
    const indexesActive = (Table?.GlobalSecondaryIndexes ?? []).every((index) => index.IndexStatus === 'ACTIVE');
    if (Table?.TableStatus === 'ACTIVE' && indexesActive) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`table ${tableName} did not become active`);
}
