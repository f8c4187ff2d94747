// What the CDK stack (infra/) and the Lambda handlers (functions/) agree on: handler entry
// points, environment variables, and the payloads the state machine passes between its steps.
// Pass ids, never data: Step Functions payloads are capped at 256 KiB.

/** Entry files under functions/, each exporting `handler`. */
export const HANDLERS = {
  api: 'functions/api.ts',
  validate: 'functions/validate.ts',
  enqueue: 'functions/enqueue.ts',
  waitForChunks: 'functions/wait-for-chunks.ts',
  finalize: 'functions/finalize.ts',
  worker: 'functions/worker.ts',
  events: 'functions/events.ts',
  webhookDelivery: 'functions/webhook-delivery.ts',
  startSweep: 'functions/start-sweep.ts',
  fileReaper: 'functions/file-reaper.ts',
  pipelineRun: 'functions/pipeline-run.ts',
} as const;

/**
 * The API Lambda's timeout. A request answers by API_ROUTE_DEADLINE (API Gateway cuts it at 30 s);
 * an upload's complete joining hundreds of parts hands its join to an invocation of its own, which
 * has this long, and a complete's claim on the upload lasts this long (a claim older than this
 * belongs to a function that is gone).
 */
export const API_TIMEOUT_SECONDS = 300;

/** Environment variables the stack sets on the functions. */
export const ENV = {
  tableName: 'TABLE_NAME',
  bucketName: 'BUCKET_NAME',
  queueUrl: 'QUEUE_URL',
  stateMachineArn: 'STATE_MACHINE_ARN',
  /** JSON: the default route and per-model routes; API keys are named by Secrets Manager secret, never inlined. */
  upstreamConfig: 'UPSTREAM_CONFIG',
  /** Secrets Manager ARN of the default upstream's API key. */
  upstreamSecretArn: 'UPSTREAM_SECRET_ARN',
  /** The EventBridge bus status changes go to ('default' or the stack's bus); unset: none are published. */
  eventBusName: 'EVENT_BUS_NAME',
  /** The SQS queue feeding the webhook delivery function; unset: no webhook deliveries are recorded. */
  webhookQueueUrl: 'WEBHOOK_QUEUE_URL',
  /** The KMS key that encrypts the secrets of signed (Zhipu-style id.secret) keys; unset: signed tokens are refused. */
  signingKeyArn: 'SIGNING_KEY_ARN',
  /** JSON: the pipelines (shared/pipelines/config.ts), for the pipeline-run function and the API. */
  pipelinesConfig: 'PIPELINES_CONFIG',
  /** The queue of pipeline failures an operator must see (destination writes, trigger invocations); set on the events function. */
  pipelineDeadLetterQueueUrl: 'PIPELINE_DEAD_LETTER_QUEUE_URL',
  /** The pipeline-run function the API invokes for a run by hand. */
  pipelineRunFunction: 'PIPELINE_RUN_FUNCTION',
  /** The same limits as the local runtime (MIN_COMPLETION_WINDOW, MAX_FILE_BYTES, ...), as strings. */
  limitsPrefix: '',
} as const;

/** Input of every state machine execution, and of each Lambda step: only the batch id. */
export interface BatchExecutionInput {
  batchId: string;
}

/**
 * Finalize's input. With `failure` (state FailBatch, reached by the Catch of a step whose retries
 * are spent; `failure` is that Catch's error output), it ends the batch `failed` instead.
 */
export interface FinalizeInput {
  batchId: string;
  failure?: { Error?: string; Cause?: string };
}

/**
 * Receives of a chunk message before SQS moves it to the dead-letter queue (the queue's
 * maxReceiveCount). The worker gives a chunk up on its last receive rather than fail it again.
 */
export const CHUNK_MAX_RECEIVES = 5;

/** validate's result; the Choice state branches on `status`. */
export interface ValidateOutput {
  batchId: string;
  status: 'in_progress' | 'failed' | 'cancelling' | 'validating' | 'finalizing' | 'completed' | 'expired' | 'cancelled';
}

/**
 * enqueue's result: how long the state machine waits for the chunks (window left + drain time),
 * and how long it waits after a cancel for the requests in flight to finish.
 */
export interface EnqueueOutput {
  batchId: string;
  waitSeconds: number;
  drainSeconds: number;
}

/**
 * wait-for-chunks is invoked with a task token (.waitForTaskToken); it stores the token on the
 * batch. `draining`: invoked again after a cancel (state DrainAfterCancel), to wait for the chunks
 * in flight rather than fail on the cancel.
 */
export interface WaitForChunksInput {
  batchId: string;
  taskToken: string;
  draining?: boolean;
}

/**
 * The API function invoked by itself (asynchronously) with work a request handed over at its
 * deadline: an upload's complete whose join outlived API_ROUTE_DEADLINE.
 */
export interface ApiHandOffEvent {
  handOff: 'upload-complete';
  job: { project: string; uploadId: string; partIds: string[]; md5?: string };
}

/** The API function's API_ROUTE_DEADLINE: answered before API Gateway's 30 s, with time to hand work over. */
export const API_ROUTE_DEADLINE = '25s';

/** What DynamoDB's TTL, and only it, writes as the remover of an item (a stream record's userIdentity). */
export const TTL_PRINCIPAL = 'dynamodb.amazonaws.com';

/** The error the cancel API sends through SendTaskFailure; the state machine catches it by name. */
export const CANCEL_ERROR = 'BatchCancelled';

/**
 * The pipeline-run function's input: from EventBridge Scheduler (`scheduledTime` is its
 * <aws.scheduler.scheduled-time>), from an S3 Object Created rule, or from the API (a run by hand).
 */
export type PipelineRunEvent =
  | { kind: 'schedule'; pipeline: string; scheduledTime: string }
  | { kind: 'object-created'; pipeline: string; bucket: string; key: string; etag: string; time: string }
  | { kind: 'manual'; pipeline: string; trigger: { key: string; atMs: number; objectKey?: string } };
