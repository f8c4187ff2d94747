// The whole service as one construct, for a team that wants it inside a stack of its own;
// BatchServiceStack (batch-service-stack.ts) is this construct alone in a stack.
import { CfnOutput, RemovalPolicy } from 'aws-cdk-lib';
import * as cloudwatchActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as kms from 'aws-cdk-lib/aws-kms';
import { Construct } from 'constructs';
import { ENV } from '../functions/contract.js';
import { loadConfig } from '../shared/config.js';
import { parsePipelines } from '../shared/pipelines/config.js';
import { type BatchServiceProps, checkProps, DEFAULTS, limitsEnvironment } from './config.js';
import { Api } from './constructs/api.js';
import { Events } from './constructs/events.js';
import { FileReaper } from './constructs/file-reaper.js';
import { Lifecycle } from './constructs/lifecycle.js';
import { Monitoring } from './constructs/monitoring.js';
import { Pipelines } from './constructs/pipelines.js';
import { StartSweep } from './constructs/start-sweep.js';
import { Storage } from './constructs/storage.js';
import { UpstreamSecrets } from './constructs/upstream-secrets.js';
import { Workers } from './constructs/workers.js';
import { checkEnvironmentSizes } from './lambda-environment.js';
import { acknowledgeJustifiedWildcards } from './nag.js';

export interface BatchServiceConstructProps extends BatchServiceProps {
  /** Prefix of the CloudFormation output names, for a stack that holds more than one service. @default '' */
  readonly outputPrefix?: string;
}

const DAY_MS = 86_400_000;

export class BatchService extends Construct {
  readonly storage: Storage;
  readonly upstream: UpstreamSecrets;
  readonly workers: Workers;
  readonly lifecycle: Lifecycle;
  readonly api: Api;
  readonly pipelines: Pipelines | undefined;
  readonly startSweep: StartSweep;
  readonly fileReaper: FileReaper;
  readonly monitoring: Monitoring;
  readonly events: Events;
  /** Encrypts the secrets of signed (Zhipu-style id.secret) keys; only the API decrypts with it. */
  readonly signingKey: kms.Key;

  constructor(scope: Construct, id: string, props: BatchServiceConstructProps = {}) {
    super(scope, id);
    checkProps(props);
    const limits = loadConfig(limitsEnvironment(props.limits)).limits;
    const logRetentionDays = props.logRetentionDays ?? DEFAULTS.logRetentionDays;
    const metricsNamespace = props.metricsNamespace ?? DEFAULTS.metricsNamespace;

    this.storage = new Storage(this, 'Storage', {
      removalPolicy: props.dataRemovalPolicy ?? RemovalPolicy.RETAIN,
      maxCompletionWindowDays: limits.maxCompletionWindowMs / DAY_MS,
    });
    const prefix = props.outputPrefix ?? '';
    this.upstream = new UpstreamSecrets(this, 'Upstream', props.upstream ?? {}, prefix);

    // What every handler is told (functions/contract.ts ENV). STATE_MACHINE_ARN goes only to the
    // functions that signal or start executions: api, worker, wait-for-chunks, pipeline-run, start-sweep.
    const environment: Record<string, string> = {
      [ENV.tableName]: this.storage.table.tableName,
      [ENV.bucketName]: this.storage.bucket.bucketName,
      ...this.upstream.environment,
      ...limitsEnvironment(props.limits, props.workerMaxConcurrency ?? DEFAULTS.workerMaxConcurrency),
      POWERTOOLS_SERVICE_NAME: 'batch-service',
      POWERTOOLS_METRICS_NAMESPACE: metricsNamespace,
    };

    this.workers = new Workers(this, 'Workers', {
      storage: this.storage,
      environment,
      logRetentionDays,
      maxConcurrency: props.workerMaxConcurrency ?? DEFAULTS.workerMaxConcurrency,
      maxCompletionWindowDays: limits.maxCompletionWindowMs / DAY_MS,
      timeoutMinutes: props.workerTimeoutMinutes ?? DEFAULTS.workerTimeoutMinutes,
      upstreamSecrets: this.upstream.secrets,
    });
    environment[ENV.queueUrl] = this.workers.queue.queueUrl;
    this.workers.worker.function.addEnvironment(ENV.queueUrl, this.workers.queue.queueUrl);

    this.lifecycle = new Lifecycle(this, 'Lifecycle', { storage: this.storage, workers: this.workers, environment, logRetentionDays });
    this.workers.connectLifecycle(this.lifecycle.stateMachine);

    this.api = new Api(this, 'Api', {
      storage: this.storage,
      stateMachine: this.lifecycle.stateMachine,
      environment,
      logRetentionDays,
      throttle: props.apiThrottle === undefined ? DEFAULTS.apiThrottle : props.apiThrottle,
      reservedConcurrency: props.apiReservedConcurrency === undefined ? DEFAULTS.apiReservedConcurrency : props.apiReservedConcurrency,
    });

    // `npm run keys -- create --signed` encrypts a signed key's secret with it (an operator's
    // credentials); the API decrypts it to verify Zhipu's signed tokens, and nothing else may.
    this.signingKey = new kms.Key(this, 'SigningKey', {
      description: 'Encrypts the secrets of signed (id.secret) API keys of the Batch service',
      enableKeyRotation: true,
      removalPolicy: props.dataRemovalPolicy ?? RemovalPolicy.RETAIN,
    });
    this.signingKey.grantDecrypt(this.api.handler.function);
    this.api.handler.function.addEnvironment(ENV.signingKeyArn, this.signingKey.keyArn);

    this.startSweep = new StartSweep(this, 'StartSweep', {
      storage: this.storage,
      stateMachine: this.lifecycle.stateMachine,
      environment,
      logRetentionDays,
    });

    this.fileReaper = new FileReaper(this, 'FileReaper', { storage: this.storage, environment, logRetentionDays });

    this.events = new Events(this, 'Events', {
      storage: this.storage,
      environment,
      logRetentionDays,
      eventBus: props.eventBus ?? DEFAULTS.eventBus,
    });

    const pipelines = parsePipelines(props.pipelines ?? [], 'pipelines');
    this.pipelines =
      pipelines.length > 0
        ? new Pipelines(this, 'Pipelines', {
            storage: this.storage,
            stateMachine: this.lifecycle.stateMachine,
            environment,
            logRetentionDays,
            metricsNamespace,
            pipelines,
            eventsFunction: this.events.dispatcher,
            apiFunction: this.api.handler,
          })
        : undefined;
    // A drop pipeline on the service's bucket hears of new objects through EventBridge.
    if (this.pipelines?.needsBucketEvents) this.storage.sendEventsToEventBridge();

    this.monitoring = new Monitoring(this, 'Monitoring', {
      api: this.api,
      lifecycle: this.lifecycle,
      workers: this.workers,
      functions: {
        api: this.api.handler,
        validate: this.lifecycle.validate,
        enqueue: this.lifecycle.enqueue,
        waitForChunks: this.lifecycle.waitForChunks,
        finalize: this.lifecycle.finalize,
        worker: this.workers.worker,
        events: this.events.dispatcher,
        webhookDelivery: this.events.delivery,
        startSweep: this.startSweep.sweeper,
        fileReaper: this.fileReaper.reaper,
        ...(this.pipelines ? { pipelineRun: this.pipelines.runner } : {}),
      },
      metricsNamespace,
      alarmEmail: props.alarmEmail,
    });

    this.events.deadLetterAlarm.addAlarmAction(new cloudwatchActions.SnsAction(this.monitoring.topic));
    this.events.deadLetterAlarm.addOkAction(new cloudwatchActions.SnsAction(this.monitoring.topic));
    for (const alarm of this.pipelines?.alarms ?? []) {
      alarm.addAlarmAction(new cloudwatchActions.SnsAction(this.monitoring.topic));
      alarm.addOkAction(new cloudwatchActions.SnsAction(this.monitoring.topic));
    }

    const output = (name: string, value: string, description: string) =>
      new CfnOutput(this, name, { key: `${prefix}${name}`, value, description });
    output('ApiBaseUrl', this.api.baseUrl, 'Base URL for the OpenAI SDK: OpenAI(base_url=<this>, api_key=<a key from npm run keys>)');
    output('TableName', this.storage.table.tableName, 'DynamoDB table (TABLE_NAME for npm run keys)');
    output('SigningKeyArn', this.signingKey.keyArn, 'KMS key of signed keys (SIGNING_KEY_ARN for npm run keys -- create --signed)');
    output('BucketName', this.storage.bucket.bucketName, 'S3 bucket of file bytes and batch scratch');
    output('StateMachineArn', this.lifecycle.stateMachine.stateMachineArn, 'One execution per batch, named for the batch id');
    output('ChunkQueueUrl', this.workers.queue.queueUrl, 'SQS queue of chunk messages');
    output('DeadLetterQueueUrl', this.workers.deadLetterQueue.queueUrl, 'Chunks that failed 5 deliveries');
    output('AlarmTopicArn', this.monitoring.topic.topicArn, 'SNS topic of the alarms: subscribe to hear about them');
    output('WebhookQueueUrl', this.events.webhookQueue.queueUrl, 'SQS queue of webhook delivery attempts');
    output('EventBusName', this.events.busName ?? 'none', 'EventBridge bus of the Batch Status Change events');
    if (this.pipelines) {
      output(
        'PipelineDeadLetterQueueUrl',
        this.pipelines.deadLetterQueue.queueUrl,
        'Pipeline triggers and destination writes that failed every retry',
      );
    }
    output('DashboardName', this.monitoring.dashboard.dashboardName, 'CloudWatch dashboard of the service');

    checkEnvironmentSizes(this, Object.keys(props.upstream?.routes ?? {}).length + (props.upstream?.default ? 1 : 0));
    acknowledgeJustifiedWildcards(this);
  }
}
