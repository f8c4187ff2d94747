// moto_server, a real AWS protocol emulator (moto 5.2; on this project's machines, not on a user's):
// DynamoDB with its item and key size limits, S3 with multipart rules and the SDK's default
// checksums, SQS, and Step Functions that executes a definition (execute_state_machine). Each test
// file that uses it starts its own server on a free loopback port and stops it after; where
// moto_server is not on PATH those suites are skipped with one line (`motoSkipNotice`).
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { SFNClient } from '@aws-sdk/client-sfn';
import { SQSClient } from '@aws-sdk/client-sqs';
import { it } from 'vitest';

export const MOTO_REGION = 'us-east-1';
/** moto's default account: ARNs it creates carry it. */
export const MOTO_ACCOUNT = '123456789012';
const CREDENTIALS = { accessKeyId: 'testing', secretAccessKey: 'testing' };

/** moto_server's path, or undefined when it is not on PATH. */
export const MOTO_SERVER: string | undefined = (() => {
  const found = spawnSync('sh', ['-c', 'command -v moto_server'], { encoding: 'utf8' });
  return found.status === 0 && found.stdout.trim() ? found.stdout.trim() : undefined;
})();

/** Registers the one line a suite shows when moto_server is absent. */
export function motoSkipNotice(what: string): void {
  const line = `moto_server is not on PATH: ${what} against moto skipped`;
  console.warn(line);
  it.skip(line, () => undefined);
}

export interface MotoServer {
  endpoint: string;
  port: number;
  dynamo(region?: string): DynamoDBClient;
  /** An S3 client with the SDK's defaults (CRC32 checksums, aws-chunked bodies), as in AWS. */
  s3(region?: string): S3Client;
  sqs(region?: string): SQSClient;
  sfn(region?: string): SFNClient;
  /** The last few KB moto_server printed (for a failure's message). */
  log(): string;
  close(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

async function waitUntilUp(endpoint: string, child: ChildProcess, output: () => string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`moto_server exited with ${child.exitCode}: ${output()}`);
    try {
      const response = await fetch(`${endpoint}/moto-api/data.json`);
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`moto_server did not answer within ${timeoutMs} ms: ${output()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * Starts moto_server on a free loopback port with Step Functions executing definitions. MOTO_PORT
 * tells moto's Step Functions where the server itself is, for the service calls its tasks make.
 */
export async function startMoto(): Promise<MotoServer> {
  if (!MOTO_SERVER) throw new Error('moto_server is not on PATH');
  const port = await freePort();
  const endpoint = `http://127.0.0.1:${port}`;
  const child = spawn(MOTO_SERVER, ['-H', '127.0.0.1', '-p', String(port)], {
    env: { ...process.env, MOTO_PORT: String(port), AWS_DEFAULT_REGION: MOTO_REGION },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  const keep = (chunk: Buffer) => {
    log = (log + chunk.toString()).slice(-20_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  try {
    await waitUntilUp(endpoint, child, () => log, 60_000);
    const configured = await fetch(`${endpoint}/moto-api/config`, {
      method: 'POST',
      body: JSON.stringify({ stepfunctions: { execute_state_machine: true } }),
    });
    if (!configured.ok) throw new Error(`moto_server refused its configuration: ${configured.status}`);
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  const common = (region = MOTO_REGION) => ({ endpoint, region, credentials: CREDENTIALS });
  const clients: { destroy(): void }[] = [];
  const track = <T extends { destroy(): void }>(client: T): T => {
    clients.push(client);
    return client;
  };
  return {
    endpoint,
    port,
    dynamo: (region) => track(new DynamoDBClient(common(region))),
    s3: (region) => track(new S3Client({ ...common(region), forcePathStyle: true })),
    sqs: (region) => track(new SQSClient(common(region))),
    sfn: (region) => track(new SFNClient(common(region))),
    log: () => log,
    async close() {
      for (const client of clients) client.destroy();
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
