// Pipelines in AWS (shared/pipelines): the pipeline-run function, and what triggers it:
//   - an EventBridge Scheduler schedule per scheduled pipeline (its expression, in its time zone),
//     whose input carries the scheduled time (<aws.scheduler.scheduled-time>): the run's key;
//   - an EventBridge rule per drop pipeline on S3's Object Created events under its prefix (the
//     service's bucket sends them to EventBridge; another bucket must have EventBridge enabled).
// Every trigger is retried (a repeat is harmless: the run is claimed by one conditional write) and
// what still fails lands on the pipelines' dead-letter queue, as do destination writes that failed
// every retry (the events function, which writes destinations, may send to it); an alarm watches it,
// and another the runs that failed for their source (PipelineRunsFailed).
//
// Least privilege: the function reads only the source prefixes (and lists them, so a missing object
// is a 404 rather than a 403), writes only the project's files; the events function writes only the
// destination prefixes. No bucket-wide grant, in the service's bucket or another.
import { Duration, Stack, TimeZone, Validations } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as events from 'aws-cdk-lib/aws-events';
import * as eventTargets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambdaDestinations from 'aws-cdk-lib/aws-lambda-destinations';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as targets from 'aws-cdk-lib/aws-scheduler-targets';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { ENV, HANDLERS, type PipelineRunEvent } from '../../functions/contract.js';
import { type Location, type PipelineDefinition, pipelineInput } from '../../shared/pipelines/config.js';
import { templatePrefix } from '../../shared/pipelines/templates.js';
import { FUNCTION_ACCESS, grantAccess } from './access.js';
import { ServiceFunction } from './service-function.js';
import type { Storage } from './storage.js';

export interface PipelinesProps {
  readonly storage: Storage;
  readonly stateMachine: sfn.IStateMachine;
  readonly environment: Record<string, string>;
  readonly logRetentionDays: number;
  readonly metricsNamespace: string;
  readonly pipelines: readonly PipelineDefinition[];
  /** The events function: it writes the destinations (shared/pipelines/destinations.ts). */
  readonly eventsFunction: ServiceFunction;
  /** The API function: it lists pipelines and runs, and invokes a run by hand. */
  readonly apiFunction: ServiceFunction;
}

/** Tries of a trigger after the first (Scheduler, the rule, Lambda's asynchronous invocation). */
export const PIPELINE_TRIGGER_RETRIES = 2;
/** Imports read up to MAX_FILE_BYTES from S3 and write them back: minutes for the largest files. */
export const PIPELINE_RUN_TIMEOUT_MINUTES = 15;

export class Pipelines extends Construct {
  readonly runner: ServiceFunction;
  readonly deadLetterQueue: sqs.Queue;
  readonly schedules: scheduler.Schedule[] = [];
  readonly rules: events.Rule[] = [];
  readonly alarms: cloudwatch.Alarm[] = [];
  /** Whether the service's bucket must send its events to EventBridge (a drop pipeline reads it). */
  readonly needsBucketEvents: boolean;

  constructor(scope: Construct, id: string, props: PipelinesProps) {
    super(scope, id);
    const { storage, pipelines } = props;
    const config = JSON.stringify(pipelines.map(pipelineInput));

    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetterQueue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    Validations.of(this.deadLetterQueue).acknowledge({
      id: 'AwsSolutions-SQS3',
      reason:
        'This queue is itself the dead-letter queue of the pipeline triggers (Scheduler, the rules, Lambda asynchronous invocations) and of destination writes; nothing consumes it but an operator, alarmed when it is not empty.',
    });

    this.runner = new ServiceFunction(this, 'Run', {
      entry: HANDLERS.pipelineRun,
      description: 'Pipeline run: import the source object as an input file and create its batch',
      environment: { ...props.environment, [ENV.stateMachineArn]: props.stateMachine.stateMachineArn, [ENV.pipelinesConfig]: config },
      logRetentionDays: props.logRetentionDays,
      memorySize: 512,
      timeout: Duration.minutes(PIPELINE_RUN_TIMEOUT_MINUTES),
    });
    const fn = this.runner.function;
    grantAccess(fn, storage, FUNCTION_ACCESS.pipelineRun);
    props.stateMachine.grantStartExecution(fn);
    fn.configureAsyncInvoke({
      retryAttempts: PIPELINE_TRIGGER_RETRIES,
      maxEventAge: Duration.hours(6),
      onFailure: new lambdaDestinations.SqsDestination(this.deadLetterQueue),
    });
    for (const pipeline of pipelines) {
      const prefix = pipeline.trigger === 'schedule' ? templatePrefix(pipeline.source.key) : pipeline.source.key;
      grantObjects(fn, storage.bucket, { bucket: pipeline.source.bucket, key: prefix }, ['s3:GetObject'], true);
      // A run that fails before it has a batch leaves its summary.json there.
      grantObjects(fn, storage.bucket, pipeline.destination, ['s3:PutObject', 's3:AbortMultipartUpload'], false);
    }

    // The events function copies results to the destinations and parks what it cannot.
    const writer = props.eventsFunction.function;
    grantAccess(writer, storage, FUNCTION_ACCESS.pipelineDestinations);
    for (const pipeline of pipelines)
      grantObjects(writer, storage.bucket, pipeline.destination, ['s3:PutObject', 's3:AbortMultipartUpload'], false);
    this.deadLetterQueue.grantSendMessages(writer);
    writer.addEnvironment(ENV.pipelineDeadLetterQueueUrl, this.deadLetterQueue.queueUrl);

    // The API lists the pipelines and their runs, and has a run made by hand.
    const api = props.apiFunction.function;
    api.addEnvironment(ENV.pipelinesConfig, config);
    api.addEnvironment(ENV.pipelineRunFunction, fn.functionName);
    grantAccess(api, storage, FUNCTION_ACCESS.pipelineApi);
    fn.grantInvoke(api);

    // One role for every schedule: it may invoke only the pipeline-run function, for this account.
    const role = new iam.Role(this, 'SchedulerRole', {
      assumedBy: new iam.ServicePrincipal('scheduler.amazonaws.com', {
        conditions: { StringEquals: { 'aws:SourceAccount': Stack.of(this).account } },
      }),
      description: 'EventBridge Scheduler: invoke the pipeline-run function',
    });
    for (const pipeline of pipelines.filter((p) => p.trigger === 'schedule')) {
      const input: PipelineRunEvent = {
        kind: 'schedule',
        pipeline: pipeline.name,
        scheduledTime: scheduler.ContextAttribute.scheduledTime.toString(),
      };
      this.schedules.push(
        new scheduler.Schedule(this, `Schedule-${pipeline.name}`, {
          description: `Pipeline ${pipeline.name}: a run of ${pipeline.source.key}`,
          schedule: scheduler.ScheduleExpression.expression(pipeline.schedule!, TimeZone.of(pipeline.timeZone)),
          target: new targets.LambdaInvoke(fn, {
            input: scheduler.ScheduleTargetInput.fromObject(input),
            role,
            retryAttempts: PIPELINE_TRIGGER_RETRIES,
            maxEventAge: Duration.hours(6),
            deadLetterQueue: this.deadLetterQueue,
          }),
        }),
      );
    }

    const drops = pipelines.filter((p) => p.trigger === 'object-created');
    this.needsBucketEvents = drops.some((p) => p.source.bucket === undefined);
    for (const pipeline of drops) {
      const input: PipelineRunEvent = {
        kind: 'object-created',
        pipeline: pipeline.name,
        bucket: events.EventField.fromPath('$.detail.bucket.name'),
        key: events.EventField.fromPath('$.detail.object.key'),
        etag: events.EventField.fromPath('$.detail.object.etag'),
        time: events.EventField.time,
      };
      this.rules.push(
        new events.Rule(this, `Drop-${pipeline.name}`, {
          description: `Pipeline ${pipeline.name}: a run of each new object under ${pipeline.source.key}`,
          eventPattern: {
            source: ['aws.s3'],
            detailType: ['Object Created'],
            detail: {
              bucket: { name: [pipeline.source.bucket ?? storage.bucket.bucketName] },
              object: { key: [{ prefix: pipeline.source.key }] },
            },
          },
          targets: [
            new eventTargets.LambdaFunction(fn, {
              event: events.RuleTargetInput.fromObject(input),
              retryAttempts: PIPELINE_TRIGGER_RETRIES,
              maxEventAge: Duration.hours(6),
              deadLetterQueue: this.deadLetterQueue,
            }),
          ],
        }),
      );
    }

    this.alarms.push(
      new cloudwatch.Alarm(this, 'DeadLetterQueueNotEmpty', {
        metric: this.deadLetterQueue.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(1), statistic: 'Maximum' }),
        threshold: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluationPeriods: 1,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        alarmDescription:
          "A pipeline failure nobody will retry: a trigger whose invocations all failed (storage, or a pipeline no longer configured), or a run's results that could not be written to its destination after 5 tries (the run shows delivery_failed). The message says which.",
      }),
      new cloudwatch.Alarm(this, 'RunsFailed', {
        metric: new cloudwatch.Metric({
          namespace: props.metricsNamespace,
          metricName: 'PipelineRunsFailed',
          dimensionsMap: { service: 'batch-service' },
          period: Duration.minutes(5),
          statistic: 'Sum',
        }),
        threshold: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluationPeriods: 1,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        alarmDescription:
          'A pipeline run failed for its source (a missing object, a file that is no batch input): GET /v1/x/pipelines/{name}/runs names the reason; summary.json in the run destination says it too.',
      }),
    );
  }
}

/** `actions` on the objects under `location` (the service's bucket, or another named one); `list`: ListBucket for that prefix too. */
function grantObjects(fn: iam.IGrantable, serviceBucket: s3.IBucket, location: Location, actions: string[], list: boolean): void {
  const bucketArn =
    location.bucket === undefined ? serviceBucket.bucketArn : `arn:${Stack.of(serviceBucket).partition}:s3:::${location.bucket}`;
  fn.grantPrincipal.addToPrincipalPolicy(new iam.PolicyStatement({ actions, resources: [`${bucketArn}/${location.key}*`] }));
  if (list) {
    fn.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['s3:ListBucket'],
        resources: [bucketArn],
        conditions: { StringLike: { 's3:prefix': [`${location.key}*`] } },
      }),
    );
  }
}
