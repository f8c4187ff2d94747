// The AWS runtime in one process: the real Lambda handlers (functions/) over the real AWS adapters,
// with DynamoDB on dynalite and S3 on s3rver, and stand-ins for what cannot run here:
//
// - Step Functions: runs the state machine of infra/constructs/lifecycle.ts (Validate → Choice →
//   Enqueue → WaitForChunks with a task token → Finalize, and DrainAfterCancel, a second task
//   token, after a cancel; with its retries and catches: a step whose retries are spent goes to
//   FailBatch, the finalize handler told the failure, then BatchFailed) by invoking the handlers. The SFN client
//   is mocked (aws-sdk-client-mock), so the handlers' own StartExecution, SendTaskSuccess and
//   SendTaskFailure calls drive it. The waits time out after the waitSeconds and drainSeconds
//   Enqueue returned.
// - SQS and the event source mapping: the SQS client is mocked so SendMessageBatch lands in an
//   in-memory queue, which invokes the worker handler with synthetic SQS events, at least once:
//   a message not acknowledged (reported as a batch item failure, or the invocation threw) comes
//   back after the visibility timeout, and goes to the dead-letter list after maxReceiveCount.
// - API Gateway (HTTP API, payload 2.0): `fetch` for the official openai SDK that turns each
//   Request into an APIGatewayProxyEventV2, invokes the API handler, and turns its result into a
//   Response, following redirects as fetch does (dropping Authorization across origins).
//
// Every invocation is timed and every AWS call counted (by service and operation), for the tests
// and for `npm run cost`; `onAwsCall` also sees each S3 and DynamoDB call with the function that
// made it (test/infra/least-privilege.test.ts checks them against the stack's IAM policies).
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import type { S3Client } from '@aws-sdk/client-s3';
import { GetSecretValueCommand, ResourceNotFoundException, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import {
  DescribeExecutionCommand,
  ExecutionAlreadyExists,
  ExecutionDoesNotExist,
  SendTaskFailureCommand,
  SendTaskSuccessCommand,
  SFNClient,
  StartExecutionCommand,
  TaskDoesNotExist,
  TaskTimedOut,
} from '@aws-sdk/client-sfn';
import { SendMessageBatchCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2, Context, SQSBatchResponse, SQSEvent } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import OpenAI from 'openai';
import {
  CANCEL_ERROR,
  type EnqueueOutput,
  type FinalizeInput,
  type ValidateOutput,
  type WaitForChunksInput,
} from '../../functions/contract.js';
import { configureRuntime } from '../../functions/runtime.js';
import { DynamoMetaStore } from '../../shared/adapters/aws/dynamo-meta-store.js';
import { S3BlobStore } from '../../shared/adapters/aws/s3-blob-store.js';
import { type EmbeddedDynamo, startEmbeddedDynamo } from '../../shared/adapters/local/embedded-dynamo.js';
import { apiKeyRecord, newApiKey } from '../../shared/api/api-keys.js';
import type { ChunkMessage } from '../../shared/ports.js';
import { type LocalS3, startLocalS3 } from './s3.js';

export const FUNCTIONS = ['api', 'validate', 'enqueue', 'wait-for-chunks', 'finalize', 'worker', 'start-sweep', 'file-reaper'] as const;
/** Loaded too, invoked only by the tests that drive them (pipelines: a run, and the events drain that writes its destination). */
export const PIPELINE_FUNCTIONS = ['pipeline-run', 'events'] as const;
export type FunctionName = (typeof FUNCTIONS)[number] | (typeof PIPELINE_FUNCTIONS)[number];

type Handler = (event: any, context: Context) => Promise<any>;

/** An S3 or DynamoDB call, with the function whose invocation made it (undefined: the test's own). */
export interface AwsCall {
  fn: FunctionName | undefined;
  service: 'S3' | 'DynamoDB';
  command: string;
  input: Record<string, unknown>;
}

/** The function whose invocation the current code runs in. */
const invoking = new AsyncLocalStorage<FunctionName>();

export interface HarnessOptions {
  /** Sees every S3 and DynamoDB call. */
  onAwsCall?: (call: AwsCall) => void;
  /** Environment of the functions, beside TABLE_NAME, BUCKET_NAME, QUEUE_URL, STATE_MACHINE_ARN. */
  env?: Record<string, string>;
  /** Secrets Manager: secret id → value. */
  secrets?: Record<string, string>;
  /** SQS visibility timeout of the stand-in (ms). */
  visibilityTimeoutMs?: number;
  /** The event source mapping's MaximumConcurrency. */
  workerConcurrency?: number;
  /** Messages per worker invocation (the stack uses 1). */
  workerBatchSize?: number;
  maxReceiveCount?: number;
  /** Called for every delivery: 'lose-ack' drops the worker's acknowledgement, 'duplicate' also delivers a concurrent copy. */
  onDelivery?: (message: ChunkMessage, receiveCount: number) => 'lose-ack' | 'duplicate' | undefined;
  /** Lambda timeouts by function (ms; default 15 minutes): what the context's getRemainingTimeInMillis counts down from. */
  functionTimeoutMs?: Partial<Record<FunctionName, number>>;
  /** Multiplies the state machine's wait timeouts (waitSeconds, drainSeconds), so a test can reach them. */
  waitTimeoutScale?: number;
  /** Wraps the S3 client (fault injection). */
  s3Middleware?: (
    next: (args: { input: any }) => Promise<{ output: any; response: unknown }>,
    context: { commandName?: string },
  ) => (args: { input: any }) => Promise<{ output: any; response: unknown }>;
}

export interface ApiExchange {
  method: string;
  path: string;
  status: number;
  location?: string;
  eventBytes: number;
  resultBytes: number;
}

const MiB = 1024 * 1024;
/** Lambda's synchronous invocation payload limit, for the request event and for the answer. */
export const LAMBDA_PAYLOAD_LIMIT = 6 * MiB;
const QUEUE_URL = 'https://sqs.us-east-1.amazonaws.com/123456789012/batch-chunks';
const STATE_MACHINE_ARN = 'arn:aws:states:us-east-1:123456789012:stateMachine:batches';
const API_ORIGIN = 'https://api.batch.test';

export class AwsHarness {
  readonly invocations = new Map<FunctionName, { count: number; totalMs: number }>();
  readonly awsCalls = new Map<string, number>();
  readonly capacity = { read: 0, write: 0 };
  readonly apiExchanges: ApiExchange[] = [];
  readonly sfn: StepFunctionsStandIn;
  readonly sqs: SqsStandIn;
  readonly meta: DynamoMetaStore;
  readonly blobs: S3BlobStore;
  /** Asynchronous invocations of the API function (work a request handed over at its deadline), until they end. */
  readonly handOffs = new Set<Promise<unknown>>();
  /** The Lambda handlers by function; a test may wrap one to inject a fault. */
  handlers: Partial<Record<FunctionName, Handler>> = {};
  private readonly timeouts: Partial<Record<FunctionName, number>>;

  private constructor(
    readonly dynamo: EmbeddedDynamo,
    private readonly s3: LocalS3,
    options: HarnessOptions,
    private readonly mocks: { restore(): void },
    s3Client: S3Client,
  ) {
    this.timeouts = options.functionTimeoutMs ?? {};
    this.meta = new DynamoMetaStore({ client: dynamo.client, tableName: dynamo.tableName });
    this.blobs = new S3BlobStore({ client: s3Client, bucket: s3.bucket });
    this.sfn = new StepFunctionsStandIn(this, options.waitTimeoutScale ?? 1);
    this.sqs = new SqsStandIn(this, {
      visibilityTimeoutMs: options.visibilityTimeoutMs ?? 3_000,
      concurrency: options.workerConcurrency ?? 4,
      batchSize: options.workerBatchSize ?? 1,
      maxReceiveCount: options.maxReceiveCount ?? 5,
      onDelivery: options.onDelivery,
    });
  }

  static async start(options: HarnessOptions = {}): Promise<AwsHarness> {
    const dynamo = await startEmbeddedDynamo({ tableName: `aws-e2e-${process.pid}-${Date.now()}` });
    const s3 = await startLocalS3(`aws-e2e-${Date.now()}`);
    const s3Client = s3.newClient();
    const credentials = { accessKeyId: 'test', secretAccessKey: 'test' };
    const sfnClient = new SFNClient({ region: 'us-east-1', credentials });
    const sqsClient = new SQSClient({ region: 'us-east-1', credentials });
    const secretsClient = new SecretsManagerClient({ region: 'us-east-1', credentials });
    const mocks = [mockClient(sfnClient), mockClient(sqsClient), mockClient(secretsClient)] as const;
    const harness = new AwsHarness(dynamo, s3, options, { restore: () => mocks.forEach((m) => m.restore()) }, s3Client);

    harness.count(s3Client, 'S3', false, options.onAwsCall);
    harness.count(dynamo.client, 'DynamoDB', true, options.onAwsCall);
    if (options.s3Middleware) s3Client.middlewareStack.add(options.s3Middleware as never, { step: 'initialize', name: 'faults' });

    const [sfnMock, sqsMock, secretsMock] = mocks;
    // Lambda, for the API function's hand-offs only: InvocationType Event queues the invocation and
    // answers 202 at once. A stand-in rather than aws-sdk-client-mock, whose mock of an instance
    // would undo a test's mock of the LambdaClient class (pipelines.test.ts).
    const lambdaClient = {
      send: async (command: InvokeCommand) => {
        const input = command.input;
        harness.tally('Lambda.Invoke');
        const event = JSON.parse(Buffer.from(input.Payload as Uint8Array).toString('utf8'));
        const run = harness.invoke(input.FunctionName as FunctionName, event).catch(() => undefined);
        harness.handOffs.add(run);
        void run.finally(() => harness.handOffs.delete(run));
        return { StatusCode: 202 };
      },
    } as unknown as LambdaClient;
    sfnMock.on(StartExecutionCommand).callsFake(async (input) => harness.sfn.startExecution(input.name!, input.input!));
    sfnMock.on(DescribeExecutionCommand).callsFake(async (input) => harness.sfn.describeExecution(input.executionArn!));
    sfnMock.on(SendTaskSuccessCommand).callsFake(async (input) => harness.sfn.taskResponse(input.taskToken!, { ok: true }));
    sfnMock
      .on(SendTaskFailureCommand)
      .callsFake(async (input) => harness.sfn.taskResponse(input.taskToken!, { ok: false, error: input.error ?? 'States.TaskFailed' }));
    sqsMock.on(SendMessageBatchCommand).callsFake(async (input) => harness.sqs.sendMessageBatch(input.Entries ?? []));
    secretsMock.on(GetSecretValueCommand).callsFake(async (input) => {
      harness.tally('SecretsManager.GetSecretValue');
      const value = options.secrets?.[input.SecretId!];
      if (value === undefined) throw new ResourceNotFoundException({ message: `no secret ${input.SecretId}`, $metadata: {} });
      return { SecretString: value };
    });

    configureRuntime({
      env: {
        TABLE_NAME: dynamo.tableName,
        BUCKET_NAME: s3.bucket,
        QUEUE_URL,
        STATE_MACHINE_ARN,
        // Lambda sets it: the API function hands work over to an invocation of itself.
        AWS_LAMBDA_FUNCTION_NAME: 'api',
        ...options.env,
      },
      clients: { s3: s3Client, dynamo: dynamo.client, sqs: sqsClient, sfn: sfnClient, secrets: secretsClient, lambda: lambdaClient },
    });
    const modules = await Promise.all([
      import('../../functions/api.js'),
      import('../../functions/validate.js'),
      import('../../functions/enqueue.js'),
      import('../../functions/wait-for-chunks.js'),
      import('../../functions/finalize.js'),
      import('../../functions/worker.js'),
      import('../../functions/start-sweep.js'),
      import('../../functions/file-reaper.js'),
      import('../../functions/pipeline-run.js'),
      import('../../functions/events.js'),
    ]);
    [...FUNCTIONS, ...PIPELINE_FUNCTIONS].forEach((name, i) => {
      harness.handlers[name] = modules[i]!.handler as unknown as Handler;
    });
    return harness;
  }

  tally(name: string, by = 1): void {
    this.awsCalls.set(name, (this.awsCalls.get(name) ?? 0) + by);
  }

  /** Counts every command a client sends; for DynamoDB, also the capacity units it consumed. */
  private count(client: S3Client | DynamoDBClient, service: AwsCall['service'], capacity: boolean, onCall?: (call: AwsCall) => void): void {
    (client.middlewareStack as S3Client['middlewareStack']).add(
      (next, context) => async (args) => {
        const input = args.input as Record<string, unknown>;
        const command = String(context.commandName).replace(/Command$/, '');
        onCall?.({ fn: invoking.getStore(), service, command, input });
        if (capacity && input && !('ReturnConsumedCapacity' in input)) input.ReturnConsumedCapacity = 'TOTAL';
        this.tally(`${service}.${command}`);
        const out = await next(args);
        if (capacity) {
          const consumed = (out.output as { ConsumedCapacity?: { CapacityUnits?: number } | { CapacityUnits?: number }[] })
            .ConsumedCapacity;
          const units = [consumed ?? []].flat().reduce((sum, c) => sum + (c.CapacityUnits ?? 0), 0);
          const write = /Put|Update|Delete|Write/.test(String(context.commandName));
          if (write) this.capacity.write += units;
          else this.capacity.read += units;
        }
        return out;
      },
      { step: 'initialize', name: `count${service}` },
    );
  }

  /** Invokes a handler as Lambda would: a fresh context, timed. */
  async invoke<R = unknown>(name: FunctionName, event: unknown): Promise<R> {
    const handler = this.handlers[name];
    if (!handler) throw new Error(`no handler ${name}`);
    const started = performance.now();
    try {
      return (await invoking.run(name, () => handler(event, lambdaContext(name, started, this.timeouts[name])))) as R;
    } finally {
      const stats = this.invocations.get(name) ?? { count: 0, totalMs: 0 };
      stats.count += 1;
      stats.totalMs += performance.now() - started;
      this.invocations.set(name, stats);
    }
  }

  /** An API key of `project`, stored hashed as `npm run keys -- create` does. */
  async createKey(project: string): Promise<string> {
    const key = newApiKey();
    await this.meta.putApiKey(apiKeyRecord(key, project, Date.now()));
    return key;
  }

  /** The official openai SDK, its requests carried to the API handler as API Gateway events. */
  openai(apiKey: string): OpenAI {
    return new OpenAI({ baseURL: `${API_ORIGIN}/v1`, apiKey, maxRetries: 0, timeout: 60_000, fetch: this.apiFetch });
  }

  readonly apiFetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const request = new Request(input, init);
    const url = new URL(request.url);
    if (url.origin !== API_ORIGIN) return fetch(request);
    const body = request.body ? Buffer.from(await request.arrayBuffer()) : undefined;
    const event = apiGatewayEvent(request, url, body);
    const eventBytes = Buffer.byteLength(JSON.stringify(event));
    if (eventBytes > LAMBDA_PAYLOAD_LIMIT) {
      // API Gateway answers for the function it could not invoke.
      return Response.json({ message: 'Request Entity Too Large' }, { status: 413 });
    }
    const result = await this.invoke<APIGatewayProxyStructuredResultV2>('api', event);
    const resultBytes = Buffer.byteLength(JSON.stringify(result));
    const status = result.statusCode ?? 200;
    const headers = new Headers();
    for (const [name, value] of Object.entries(result.headers ?? {})) headers.set(name, String(value));
    for (const cookie of result.cookies ?? []) headers.append('set-cookie', cookie);
    this.apiExchanges.push({
      method: request.method,
      path: url.pathname,
      status,
      location: headers.get('location') ?? undefined,
      eventBytes,
      resultBytes,
    });
    if (resultBytes > LAMBDA_PAYLOAD_LIMIT) {
      throw new Error(
        `the API answered ${resultBytes} bytes, more than Lambda returns (${LAMBDA_PAYLOAD_LIMIT}): API Gateway would answer 500`,
      );
    }
    const payload = result.body === undefined ? null : result.isBase64Encoded ? Buffer.from(result.body, 'base64') : result.body;
    const location = headers.get('location');
    if ([301, 302, 303, 307, 308].includes(status) && location && request.redirect === 'follow') {
      // As fetch does: follow, and send Authorization only to the same origin.
      const target = new URL(location, url);
      const forwarded = new Headers(request.headers);
      if (target.origin !== url.origin) forwarded.delete('authorization');
      if (target.origin !== API_ORIGIN) this.tally('S3.GetObject (presigned, by the client)');
      return this.apiFetch(target, { method: 'GET', headers: forwarded, signal: request.signal });
    }
    return new Response(status === 204 || status === 304 ? null : payload, { status, headers });
  };

  /** Waits until no execution runs and no message is queued or being worked on. */
  async settle(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.sfn.running > 0 || !this.sqs.idle) {
      if (Date.now() > deadline)
        throw new Error(`still busy after ${timeoutMs} ms: ${this.sfn.running} executions, ${this.sqs.describe()}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.handOffs]);
    this.sqs.stop();
    this.sfn.stop();
    await Promise.allSettled([...this.sfn.executions.values()]);
    await this.sqs.drain();
    configureRuntime({});
    this.mocks.restore();
    await Promise.allSettled([this.dynamo.close(), this.s3.close()]);
  }
}

function apiGatewayEvent(request: Request, url: URL, body: Buffer | undefined): APIGatewayProxyEventV2 {
  const headers: Record<string, string> = {};
  request.headers.forEach((value, name) => {
    if (name !== 'cookie') headers[name] = value;
  });
  headers.host = url.host;
  const query: Record<string, string> = {};
  url.searchParams.forEach((value, name) => {
    query[name] = name in query ? `${query[name]},${value}` : value;
  });
  const now = new Date();
  return {
    version: '2.0',
    routeKey: '$default',
    rawPath: url.pathname,
    rawQueryString: url.search.slice(1),
    cookies: request.headers.get('cookie')?.split('; '),
    headers,
    queryStringParameters: Object.keys(query).length > 0 ? query : undefined,
    requestContext: {
      accountId: '123456789012',
      apiId: 'batchapi',
      domainName: url.host,
      domainPrefix: url.host.split('.')[0]!,
      http: {
        method: request.method,
        path: url.pathname,
        protocol: 'HTTP/1.1',
        sourceIp: '127.0.0.1',
        userAgent: headers['user-agent'] ?? '',
      },
      requestId: randomUUID(),
      routeKey: '$default',
      stage: '$default',
      time: now.toISOString(),
      timeEpoch: now.getTime(),
    },
    // HTTP APIs send every body base64-encoded unless it is text; base64 is always correct.
    ...(body && body.length > 0 ? { body: body.toString('base64'), isBase64Encoded: true } : { isBase64Encoded: false }),
  };
}

function lambdaContext(functionName: string, startedMs: number, timeoutMs = 15 * 60_000): Context {
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:us-east-1:123456789012:function:${functionName}`,
    memoryLimitInMB: '1024',
    awsRequestId: randomUUID(),
    logGroupName: `/aws/lambda/${functionName}`,
    logStreamName: 'local',
    getRemainingTimeInMillis: () => Math.max(0, timeoutMs - (performance.now() - startedMs)),
    done: () => undefined,
    fail: () => undefined,
    succeed: () => undefined,
  };
}

type TaskOutcome = { ok: true } | { ok: false; error: string };

/** The state machine of infra/constructs/lifecycle.ts, run in-process. */
export class StepFunctionsStandIn {
  readonly executions = new Map<string, Promise<void>>();
  /** Billed state transitions: every state entered, retries included. */
  transitions = 0;
  /** States entered, per execution. */
  readonly paths = new Map<string, string[]>();
  running = 0;
  /** While set, StartExecution fails with this error (Step Functions throttling or down). */
  refuseStarts: Error | undefined;
  private readonly ended = new Set<string>();
  private readonly waiting = new Map<string, (outcome: TaskOutcome | 'timeout') => void>();
  private readonly finishedTokens = new Set<string>();
  private stopped = false;

  constructor(
    private readonly harness: AwsHarness,
    /** Multiplies waitSeconds and drainSeconds, so a test reaches the waits' timeouts (the window's end, the drain's) sooner. */
    public timeoutScale: number,
  ) {}

  startExecution(name: string, input: string) {
    this.harness.tally('StepFunctions.StartExecution');
    if (this.refuseStarts) throw this.refuseStarts;
    if (this.executions.has(name)) throw new ExecutionAlreadyExists({ message: `Execution Already Exists: '${name}'`, $metadata: {} });
    this.running += 1;
    const run = this.run(name, JSON.parse(input) as { batchId: string }).finally(() => {
      this.running -= 1;
      this.ended.add(name);
    });
    this.executions.set(name, run);
    return { executionArn: `${STATE_MACHINE_ARN.replace(':stateMachine:', ':execution:')}:${name}`, startDate: new Date() };
  }

  describeExecution(executionArn: string) {
    this.harness.tally('StepFunctions.DescribeExecution');
    const name = executionArn.split(':').at(-1)!;
    if (!this.executions.has(name))
      throw new ExecutionDoesNotExist({ message: `Execution Does Not Exist: '${executionArn}'`, $metadata: {} });
    return { executionArn, status: this.ended.has(name) ? ('SUCCEEDED' as const) : ('RUNNING' as const) };
  }

  taskResponse(token: string, outcome: TaskOutcome) {
    this.harness.tally(outcome.ok ? 'StepFunctions.SendTaskSuccess' : 'StepFunctions.SendTaskFailure');
    const resolve = this.waiting.get(token);
    if (!resolve) {
      if (this.finishedTokens.has(token)) throw new TaskTimedOut({ message: 'Task Timed Out', $metadata: {} });
      throw new TaskDoesNotExist({ message: 'Task does not exist', $metadata: {} });
    }
    this.waiting.delete(token);
    this.finishedTokens.add(token);
    resolve(outcome);
    return {};
  }

  stop(): void {
    this.stopped = true;
    for (const resolve of this.waiting.values()) resolve('timeout');
  }

  private async run(name: string, input: { batchId: string }): Promise<void> {
    const path: string[] = [];
    this.paths.set(name, path);
    const enter = (state: string) => {
      this.transitions += 1;
      path.push(state);
    };
    // LambdaInvoke with Retry: a few attempts with backoff on a function error.
    const task = async <R>(state: string, fn: FunctionName, event: unknown): Promise<R> => {
      for (let attempt = 1; ; attempt++) {
        enter(state);
        try {
          return await this.harness.invoke<R>(fn, event);
        } catch (error) {
          if (attempt >= 3 || this.stopped) throw error;
          await new Promise((resolve) => setTimeout(resolve, 20 * attempt));
        }
      }
    };

    // Catch States.ALL → FailBatch: the finalize handler told the failure, then the Fail state
    // BatchFailed (or FailBatchFailed when that fails too).
    const failBatch = async (error: unknown) => {
      const failure = { Error: error instanceof Error ? error.name : 'States.TaskFailed', Cause: String(error) };
      try {
        await task('FailBatch', 'finalize', { ...input, failure } satisfies FinalizeInput);
        enter('BatchFailed');
      } catch {
        enter('FailBatchFailed');
      }
    };
    const caught = async <R>(run: () => Promise<R>): Promise<{ ok: true; value: R } | { ok: false }> => {
      try {
        return { ok: true, value: await run() };
      } catch (error) {
        await failBatch(error);
        return { ok: false };
      }
    };

    const validated = await caught(() => task<ValidateOutput>('Validate', 'validate', input));
    if (!validated.ok) return;
    enter('AfterValidate');
    if (validated.value.status === 'failed') {
      enter('ValidationFailed');
      return;
    }
    if (validated.value.status === 'in_progress') {
      const wait = await caught(() => task<EnqueueOutput>('Enqueue', 'enqueue', input));
      if (!wait.ok) return;
      enter('WaitForChunks');
      const ended = await this.waitForTaskToken({ batchId: input.batchId }, wait.value.waitSeconds, path);
      if (ended === undefined || (ended !== CANCEL_ERROR && ended !== 'States.Timeout' && ended !== 'TaskSuccess')) {
        await failBatch(new Error(ended ?? 'States.TaskFailed'));
        return;
      }
      if (ended === CANCEL_ERROR) {
        enter('DrainAfterCancel');
        // Catch States.ALL → Finalize (cancelled), as for its timeout.
        await this.waitForTaskToken({ batchId: input.batchId, draining: true }, wait.value.drainSeconds, path);
      }
    }
    await caught(() => task('Finalize', 'finalize', input));
  }

  /** A LambdaInvoke .waitForTaskToken; records and returns how it ended (undefined: the invocation failed). */
  private async waitForTaskToken(
    payload: Omit<WaitForChunksInput, 'taskToken'>,
    waitSeconds: number,
    path: string[],
  ): Promise<string | undefined> {
    const token = `token-${randomUUID()}`;
    const outcome = new Promise<TaskOutcome | 'timeout'>((resolve) => {
      this.waiting.set(token, resolve);
      const timer = setTimeout(() => resolve('timeout'), waitSeconds * 1000 * this.timeoutScale);
      timer.unref();
    });
    try {
      await this.harness.invoke('wait-for-chunks', { ...payload, taskToken: token } satisfies WaitForChunksInput);
    } catch {
      // The task failed before answering its token: Catch States.ALL (FailBatch after WaitForChunks, Finalize after DrainAfterCancel).
      this.waiting.delete(token);
      return undefined;
    }
    const result = await outcome;
    this.waiting.delete(token);
    this.finishedTokens.add(token);
    const ended = result === 'timeout' ? 'States.Timeout' : result.ok ? 'TaskSuccess' : result.error;
    path.push(ended);
    return ended;
  }
}

interface QueuedMessage {
  messageId: string;
  body: string;
  /** The tenant of SQS fair queues (undefined: a message of its own). */
  groupId?: string;
  receiveCount: number;
  visibleAtMs: number;
  sentAtMs: number;
  /**
   * A worker invocation has it. The stack's visibility timeout is six times the worker's timeout,
   * so a message never comes back while its invocation runs, however slow a loaded machine makes
   * the invocation against this stand-in's short timeout.
   */
  held?: boolean;
}

interface SqsOptions {
  visibilityTimeoutMs: number;
  concurrency: number;
  batchSize: number;
  maxReceiveCount: number;
  onDelivery?: HarnessOptions['onDelivery'];
}

/** SQS and Lambda's event source mapping (batch size, MaximumConcurrency, ReportBatchItemFailures). */
export class SqsStandIn {
  readonly queued = new Map<string, QueuedMessage>();
  readonly deadLetters: QueuedMessage[] = [];
  /** Deliveries per chunk ("batchId/index"). */
  readonly deliveries = new Map<string, number>();
  /** Every message sent and every delivery, in order (for the fairness measurements). */
  readonly journal: { event: 'sent' | 'delivered'; batchId: string; index: number; groupId?: string; queued: number }[] = [];
  private readonly running = new Set<Promise<void>>();
  private timer: NodeJS.Timeout;
  private stopped = false;

  constructor(
    private readonly harness: AwsHarness,
    /** A test may swap onDelivery to watch or disturb deliveries. */
    readonly options: SqsOptions,
  ) {
    this.timer = setInterval(() => this.pump(), 5);
    this.timer.unref();
  }

  get idle(): boolean {
    return this.queued.size === 0 && this.running.size === 0;
  }

  describe(): string {
    return `${this.queued.size} messages queued, ${this.running.size} worker invocations running`;
  }

  sendMessageBatch(entries: { Id?: string; MessageBody?: string; DelaySeconds?: number; MessageGroupId?: string }[]) {
    this.harness.tally('SQS.SendMessageBatch');
    if (entries.length > 10) throw new Error('SendMessageBatch takes at most 10 entries');
    const now = Date.now();
    for (const entry of entries) {
      const messageId = randomUUID();
      const visibleAtMs = now + (entry.DelaySeconds ?? 0) * 1_000;
      this.queued.set(messageId, {
        messageId,
        body: entry.MessageBody!,
        receiveCount: 0,
        visibleAtMs,
        sentAtMs: now,
        ...(entry.MessageGroupId ? { groupId: entry.MessageGroupId } : {}),
      });
      const sent = JSON.parse(entry.MessageBody!) as ChunkMessage;
      this.journal.push({
        event: 'sent',
        batchId: sent.batchId,
        index: sent.chunk.index,
        groupId: entry.MessageGroupId,
        queued: this.queued.size,
      });
    }
    this.pump();
    return { Successful: entries.map((e) => ({ Id: e.Id!, MessageId: randomUUID(), MD5OfMessageBody: '' })), Failed: [] };
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
  }

  async drain(): Promise<void> {
    await Promise.allSettled([...this.running]);
  }

  private pump(): void {
    while (!this.stopped && this.running.size < this.options.concurrency) {
      const now = Date.now();
      const visible = [...this.queued.values()].filter((m) => m.visibleAtMs <= now && !m.held).slice(0, this.options.batchSize);
      if (visible.length === 0) return;
      this.harness.tally('SQS.ReceiveMessage');
      const lostAcks = new Set<string>();
      const copies: QueuedMessage[] = [];
      for (const message of visible) {
        message.receiveCount += 1;
        message.visibleAtMs = now + this.options.visibilityTimeoutMs;
        const chunk = JSON.parse(message.body) as ChunkMessage;
        const key = `${chunk.batchId}/${chunk.chunk.index}`;
        this.deliveries.set(key, (this.deliveries.get(key) ?? 0) + 1);
        this.journal.push({
          event: 'delivered',
          batchId: chunk.batchId,
          index: chunk.chunk.index,
          groupId: message.groupId,
          queued: this.queued.size,
        });
        const fate = this.options.onDelivery?.(chunk, message.receiveCount);
        if (fate === 'lose-ack') lostAcks.add(message.messageId);
        if (fate === 'duplicate') copies.push(message);
      }
      this.start(visible, lostAcks);
      // SQS may hand the same message to two consumers at once (at-least-once delivery).
      if (copies.length > 0) this.start(copies, lostAcks, true);
    }
  }

  private start(messages: QueuedMessage[], lostAcks: Set<string>, duplicate = false): void {
    if (!duplicate) for (const message of messages) message.held = true;
    const run = this.deliver(messages, lostAcks, duplicate).finally(() => {
      if (!duplicate) for (const message of messages) message.held = false;
      this.running.delete(run);
      this.pump();
    });
    this.running.add(run);
  }

  private async deliver(messages: QueuedMessage[], lostAcks: Set<string>, duplicate: boolean): Promise<void> {
    const event: SQSEvent = {
      Records: messages.map((m) => ({
        messageId: m.messageId,
        receiptHandle: `${m.messageId}#${m.receiveCount}${duplicate ? '#copy' : ''}`,
        body: m.body,
        attributes: {
          ApproximateReceiveCount: String(m.receiveCount),
          SentTimestamp: String(m.sentAtMs),
          SenderId: 'AROAEXAMPLE',
          ApproximateFirstReceiveTimestamp: String(m.sentAtMs),
        },
        messageAttributes: {},
        md5OfBody: '',
        eventSource: 'aws:sqs',
        eventSourceARN: 'arn:aws:sqs:us-east-1:123456789012:batch-chunks',
        awsRegion: 'us-east-1',
      })),
    };
    let failed: Set<string>;
    try {
      const response = await this.harness.invoke<SQSBatchResponse>('worker', event);
      failed = new Set((response?.batchItemFailures ?? []).map((f) => f.itemIdentifier));
    } catch {
      failed = new Set(messages.map((m) => m.messageId));
    }
    if (duplicate) return;
    // A lost acknowledgement: the worker finished, but its answer never reached the poller (it
    // timed out, or crashed after recording the chunk); the message comes back after the timeout.
    const acknowledged = messages.filter((m) => !failed.has(m.messageId) && !lostAcks.has(m.messageId));
    if (acknowledged.length > 0) this.harness.tally('SQS.DeleteMessageBatch');
    for (const message of acknowledged) this.queued.delete(message.messageId);
    for (const message of messages) {
      if (acknowledged.includes(message) || message.receiveCount < this.options.maxReceiveCount) continue;
      // The redrive policy moves a message that keeps failing to the dead-letter queue.
      this.queued.delete(message.messageId);
      this.deadLetters.push(message);
    }
  }
}
