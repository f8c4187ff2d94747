// An S3-compatible server for the tests (s3rver, files under a temporary directory) and an S3
// client set up for it.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { S3Client } from '@aws-sdk/client-s3';
import S3rver from 's3rver';
import { s3CompatibleClientConfig } from '../../shared/adapters/aws/s3-blob-store.js';

export interface LocalS3 {
  client: S3Client;
  bucket: string;
  endpoint: string;
  /** A new client for the same server (e.g. to give one component its own middleware). */
  newClient(): S3Client;
  close(): Promise<void>;
}

export async function startLocalS3(bucket = 'batch-test-bucket'): Promise<LocalS3> {
  const directory = await mkdtemp(join(tmpdir(), 's3rver-'));
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory, configureBuckets: [{ name: bucket }] });
  const { port } = await server.run();
  const endpoint = `http://127.0.0.1:${port}`;
  const newClient = () =>
    new S3Client({
      ...s3CompatibleClientConfig(endpoint),
      region: 'us-east-1',
      credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    });
  const client = newClient();
  return {
    client,
    bucket,
    endpoint,
    newClient,
    async close() {
      client.destroy();
      await server.close();
      await rm(directory, { recursive: true, force: true });
    },
  };
}
