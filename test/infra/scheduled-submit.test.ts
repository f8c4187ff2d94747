// The scheduled-submit handler that the Schedules construct invokes: it creates the batch through
// the API's own POST /v1/batches route, as the schedule's project, over the real DynamoDB adapter
// (on dynalite) and a mocked Step Functions client.
import { SFNClient, StartExecutionCommand } from '@aws-sdk/client-sfn';
import type { Context } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { logger } from '../../functions/observability.js';
import type { ScheduledSubmitEvent, ScheduledSubmitResult } from '../../functions/scheduled-submit.js';
import { DynamoMetaStore } from '../../shared/adapters/aws/dynamo-meta-store.js';
import { type EmbeddedDynamo, startEmbeddedDynamo } from '../../shared/adapters/local/embedded-dynamo.js';
import { fileRecord } from '../adapters/meta-store-contract.js';

const STATE_MACHINE_ARN = 'arn:aws:states:us-east-1:123456789012:stateMachine:batch';
const sfn = mockClient(SFNClient);
let dynamo: EmbeddedDynamo;
let meta: DynamoMetaStore;
let handler: (event: ScheduledSubmitEvent, context: Context) => Promise<ScheduledSubmitResult>;
const savedEnv = { ...process.env };
const context = { functionName: 'scheduled-submit', awsRequestId: 'req-1', getRemainingTimeInMillis: () => 30_000 } as unknown as Context;

beforeAll(async () => {
  dynamo = await startEmbeddedDynamo();
  meta = new DynamoMetaStore({ client: dynamo.client, tableName: dynamo.tableName });
  // What the stack sets, and what the SDK reads in Lambda; the endpoint points it at dynalite.
  Object.assign(process.env, {
    TABLE_NAME: dynamo.tableName,
    STATE_MACHINE_ARN,
    AWS_ENDPOINT_URL_DYNAMODB: dynamo.endpoint,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'local',
    AWS_SECRET_ACCESS_KEY: 'local',
    // Powertools Logger: nothing on the test output (the calls are still observable).
    POWERTOOLS_LOG_LEVEL: 'SILENT',
    POWERTOOLS_METRICS_DISABLED: 'true',
  });
  ({ handler } = await import('../../functions/scheduled-submit.js'));
});

afterAll(async () => {
  vi.restoreAllMocks();
  process.env = savedEnv;
  sfn.restore();
  await dynamo?.close();
});

beforeEach(() => {
  sfn.reset();
  sfn.on(StartExecutionCommand).resolves({ executionArn: 'arn:execution', startDate: new Date() });
});

const event = (overrides: Partial<ScheduledSubmitEvent> = {}): ScheduledSubmitEvent => ({
  schedule: 'nightly',
  project: 'reviews',
  input_file_id: 'file-missing',
  endpoint: '/v1/chat/completions',
  completion_window: '24h',
  metadata: { source: 'schedule' },
  ...overrides,
});

describe('scheduled-submit', () => {
  it("creates a batch of the schedule's project and starts its execution", async () => {
    const file = fileRecord({ project: 'reviews', expiresAtMs: Date.now() + 3_600_000 });
    await meta.putFile(file);

    const result = await handler(event({ input_file_id: file.id }), context);

    expect(result.status).toBe('validating');
    const batch = await meta.getBatch(result.batchId);
    expect(batch).toMatchObject({
      project: 'reviews',
      inputFileId: file.id,
      endpoint: '/v1/chat/completions',
      completionWindow: '24h',
      status: 'validating',
      metadata: { source: 'schedule' },
    });
    const starts = sfn.commandCalls(StartExecutionCommand);
    expect(starts).toHaveLength(1);
    expect(starts[0]!.args[0].input).toEqual({
      stateMachineArn: STATE_MACHINE_ARN,
      name: result.batchId,
      input: JSON.stringify({ batchId: result.batchId }),
    });
  });

  it("cannot use another project's file: it looks missing, and nothing starts", async () => {
    const errorLog = vi.spyOn(logger(), 'error');
    const file = fileRecord({ project: 'someone-else', expiresAtMs: Date.now() + 3_600_000 });
    await meta.putFile(file);
    await expect(handler(event({ input_file_id: file.id }), context)).rejects.toThrow(/nightly failed \(404\)/);
    expect(errorLog).toHaveBeenCalledWith(
      'scheduled submission failed',
      expect.objectContaining({ schedule: 'nightly', project: 'reviews', status: 404 }),
    );
    expect(sfn.commandCalls(StartExecutionCommand)).toHaveLength(0);
  });

  it('fails with the API message on a bad request', async () => {
    const file = fileRecord({ project: 'reviews', expiresAtMs: Date.now() + 3_600_000 });
    await meta.putFile(file);
    await expect(handler(event({ input_file_id: file.id, completion_window: '1h' }), context)).rejects.toThrow(
      /\(400\).*completion_window/,
    );
    expect(sfn.commandCalls(StartExecutionCommand)).toHaveLength(0);
  });
});
