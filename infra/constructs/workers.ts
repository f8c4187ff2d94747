// The chunk workers: an SQS queue of chunk messages (byte ranges of the input, never the lines
// themselves), a dead-letter queue, and the worker Lambda fed one chunk per invocation, with
// many requests in flight inside it.
import { Duration } from 'aws-cdk-lib';
import * as lambdaEventSources from 'aws-cdk-lib/aws-lambda-event-sources';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { CHUNK_MAX_RECEIVES, ENV, HANDLERS } from '../../functions/contract.js';
import { FUNCTION_ACCESS, grantAccess } from './access.js';
import { ServiceFunction } from './service-function.js';
import type { Storage } from './storage.js';

export interface WorkersProps {
  readonly storage: Storage;
  readonly environment: Record<string, string>;
  readonly logRetentionDays: number;
  /** The event source's MaximumConcurrency (2..1000). */
  readonly maxConcurrency: number;
  readonly timeoutMinutes: number;
  /** The longest completion window a batch may ask for (MAX_COMPLETION_WINDOW), in days. */
  readonly maxCompletionWindowDays: number;
  /** Secrets holding upstream API keys: the workers are the only callers of upstreams. */
  readonly upstreamSecrets: readonly secretsmanager.ISecret[];
}

/**
 * Lambda's guidance for SQS event sources: the queue's visibility timeout at least six times the
 * function's timeout, so the poller's own retries of a throttled invocation never see a message
 * reappear while a worker still holds it.
 */
export const VISIBILITY_TIMEOUT_FACTOR = 6;
/** Receives before a chunk message is parked in the dead-letter queue (the worker gives the chunk up on the last). */
export const MAX_RECEIVE_COUNT = CHUNK_MAX_RECEIVES;
/** SQS's longest retention, for the dead-letter queue. */
export const DEAD_LETTER_RETENTION_DAYS = 14;
/**
 * A message moved to a standard queue's dead-letter queue keeps its first enqueue time, and expires
 * by the dead-letter queue's retention counted from then: the chunk queue keeps messages this many
 * days less, so a dead letter always waits at least this long for someone to redrive it.
 */
export const DEAD_LETTER_GRACE_DAYS = 3;

/**
 * How long the chunk queue keeps a message: the longest window and a day (a chunk older than its
 * batch's window has nothing left to do), at most DEAD_LETTER_RETENTION_DAYS - DEAD_LETTER_GRACE_DAYS.
 */
export function chunkRetentionDays(maxCompletionWindowDays: number): number {
  return Math.min(DEAD_LETTER_RETENTION_DAYS - DEAD_LETTER_GRACE_DAYS, Math.ceil(maxCompletionWindowDays) + 1);
}

export class Workers extends Construct {
  readonly queue: sqs.Queue;
  readonly deadLetterQueue: sqs.Queue;
  readonly worker: ServiceFunction;

  constructor(scope: Construct, id: string, props: WorkersProps) {
    super(scope, id);

    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetterQueue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(DEAD_LETTER_RETENTION_DAYS),
    });
    // Worker timeout: 15 minutes by default, Lambda's maximum. A chunk (500 requests by default)
    // must finish inside one invocation, and slow upstreams (long generations, 429 backoff) can
    // take minutes per request; a longer invocation also means fewer invocations per batch. The
    // price is that a chunk held by a crashed worker reappears only after the visibility timeout,
    // 6 × 15 = 90 minutes, well inside the shortest default window (24h). Teams with short
    // windows can lower workerTimeoutMinutes, and the visibility timeout follows.
    const timeout = Duration.minutes(props.timeoutMinutes);
    this.queue = new sqs.Queue(this, 'ChunkQueue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      visibilityTimeout: Duration.minutes(props.timeoutMinutes * VISIBILITY_TIMEOUT_FACTOR),
      // A backlog behind MaximumConcurrency may wait as long as the longest window allows, but not
      // as long as the dead-letter queue keeps messages (see DEAD_LETTER_GRACE_DAYS). With 14-day
      // windows that is 11 days: a chunk still waiting after that is dropped, its lines expire.
      retentionPeriod: Duration.days(chunkRetentionDays(props.maxCompletionWindowDays)),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: MAX_RECEIVE_COUNT },
    });

    this.worker = new ServiceFunction(this, 'Worker', {
      entry: HANDLERS.worker,
      description: "Chunk worker: run one chunk's requests against the upstream, record the outcome once",
      environment: props.environment,
      logRetentionDays: props.logRetentionDays,
      memorySize: 1024,
      timeout,
    });
    grantAccess(this.worker.function, props.storage, FUNCTION_ACCESS.worker);
    for (const secret of props.upstreamSecrets) secret.grantRead(this.worker.function);
    // A chunk the worker runs out of time for goes back on the queue as a new message.
    this.queue.grantSendMessages(this.worker.function);

    this.worker.function.addEventSource(
      new lambdaEventSources.SqsEventSource(this.queue, {
        // One chunk per invocation: the concurrency is inside the worker (many requests in
        // flight), and a failed chunk is retried alone.
        batchSize: 1,
        reportBatchItemFailures: true,
        // Caps parallel workers, and with them the load on the upstreams. Unlike reserved
        // concurrency, the poller stops receiving at the cap, so throttling never burns a
        // message's receive count towards the dead-letter queue.
        maxConcurrency: props.maxConcurrency,
      }),
    );
  }

  /** The last worker of a batch signals the state machine (SendTaskSuccess with the stored token). */
  connectLifecycle(stateMachine: sfn.IStateMachine): void {
    this.worker.function.addEnvironment(ENV.stateMachineArn, stateMachine.stateMachineArn);
    stateMachine.grantTaskResponse(this.worker.function);
  }
}
