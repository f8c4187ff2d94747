// EventBridge Scheduler → a new batch, from an input file that is already uploaded. The batch is
// created by the API's own POST /v1/batches route (shared/api/app.ts), so a scheduled batch is
// checked and recorded exactly like one a client creates: this handler only authenticates as the
// schedule's project with a key that lives for one invocation.
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { SFNClient } from '@aws-sdk/client-sfn';
import { DynamoMetaStore } from '../shared/adapters/aws/dynamo-meta-store.js';
import { SfnLifecycle } from '../shared/adapters/aws/sfn-lifecycle.js';
import { systemClock } from '../shared/adapters/local/system-clock.js';
import { createApiApp } from '../shared/api/app.js';
import { loadConfig } from '../shared/config.js';
import { randomToken } from '../shared/ids.js';
import type { BlobStore } from '../shared/ports.js';
import { CANCEL_ERROR, ENV } from './contract.js';
import { domainLogger, lambdaHandler } from './observability.js';

/** The schedule's input (infra/constructs/schedules.ts): the body of POST /v1/batches, and whose batch it is. */
export interface ScheduledSubmitEvent {
  schedule: string;
  project: string;
  input_file_id: string;
  endpoint: string;
  completion_window: string;
  metadata?: Record<string, string> | null;
}

export interface ScheduledSubmitResult {
  batchId: string;
  status: string;
}

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`the environment variable ${name} is not set`);
  return value;
}

const config = loadConfig(process.env);
const meta = new DynamoMetaStore({ client: new DynamoDBClient({}), tableName: required(ENV.tableName) });
const lifecycle = new SfnLifecycle({
  client: new SFNClient({}),
  stateMachineArn: required(ENV.stateMachineArn),
  meta,
  cancelError: CANCEL_ERROR,
});

/** Creating a batch never touches file bytes (validation reads them later), so this function has no S3 access at all. */
const noBlobs: BlobStore = new Proxy({} as BlobStore, {
  get: (_target, operation) => () => Promise.reject(new Error(`scheduled-submit does not use the BlobStore (${String(operation)})`)),
});

export const handler = lambdaHandler('scheduled-submit', async (event: ScheduledSubmitEvent): Promise<ScheduledSubmitResult> => {
  const log = domainLogger();
  const key = `scheduled-${randomToken(40)}`;
  const app = createApiApp({
    meta,
    blobs: noBlobs,
    lifecycle,
    clock: systemClock,
    log,
    apiKeys: new Map([[key, event.project]]),
    limits: config.limits,
  });
  const response = await app.request('/v1/batches', {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      input_file_id: event.input_file_id,
      endpoint: event.endpoint,
      completion_window: event.completion_window,
      ...(event.metadata ? { metadata: event.metadata } : {}),
    }),
  });
  const body = (await response.json()) as { id?: string; status?: string; error?: { message?: string } };
  if (!response.ok || !body.id) {
    log.log('error', 'scheduled submission failed', {
      schedule: event.schedule,
      project: event.project,
      status: response.status,
      error: body.error?.message,
    });
    // The function's Errors metric (and its alarm) shows it; the invocation is not retried, so a
    // retry can never create the batch twice.
    throw new Error(`scheduled submission ${event.schedule} failed (${response.status}): ${body.error?.message ?? 'no message'}`);
  }
  log.log('info', 'scheduled batch created', { schedule: event.schedule, project: event.project, batchId: body.id });
  return { batchId: body.id, status: body.status ?? 'validating' };
});
