// Alarms on what needs a person (a chunk in the dead-letter queue, a crashing worker, a failed
// execution, API 5xx) and one dashboard of the service: API traffic, executions, the queue's
// depth and age, Lambda durations, and the handlers' own metrics (requests, retries, upstream
// latency, 429s) from their namespace.
import { ArnFormat, Duration, Stack } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import { Construct } from 'constructs';
import type { Api } from './api.js';
import type { Lifecycle } from './lifecycle.js';
import type { ServiceFunction } from './service-function.js';
import type { Workers } from './workers.js';

export interface MonitoringProps {
  readonly api: Api;
  readonly lifecycle: Lifecycle;
  readonly workers: Workers;
  /** Every handler, by a short name, for the duration and error widgets. */
  readonly functions: Readonly<Record<string, ServiceFunction>>;
  readonly metricsNamespace: string;
  readonly alarmEmail?: string;
}

const FIVE_MINUTES = Duration.minutes(5);

export class Monitoring extends Construct {
  readonly topic: sns.Topic;
  readonly alarms: cloudwatch.Alarm[] = [];
  readonly dashboard: cloudwatch.Dashboard;

  constructor(scope: Construct, id: string, props: MonitoringProps) {
    super(scope, id);
    const { api, lifecycle, workers } = props;
    this.topic = new sns.Topic(this, 'AlarmTopic', { displayName: 'Batch service alarms', enforceSSL: true });
    // enforceSSL gives the topic a policy of its own (a Deny of plain HTTP), which replaces SNS's
    // default policy: without this Allow, CloudWatch could publish no alarm to the topic. Only
    // alarms of this account and region may (aws:SourceArn, aws:SourceAccount: no confused deputy).
    const stack = Stack.of(this);
    this.topic.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'AllowCloudWatchAlarms',
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['sns:Publish'],
        resources: [this.topic.topicArn],
        conditions: {
          ArnLike: {
            'aws:SourceArn': stack.formatArn({
              service: 'cloudwatch',
              resource: 'alarm',
              resourceName: '*',
              arnFormat: ArnFormat.COLON_RESOURCE_NAME,
            }),
          },
          StringEquals: { 'aws:SourceAccount': stack.account },
        },
      }),
    );
    if (props.alarmEmail) this.topic.addSubscription(new subscriptions.EmailSubscription(props.alarmEmail));

    const dlqDepth = workers.deadLetterQueue.metricApproximateNumberOfMessagesVisible({
      period: Duration.minutes(1),
      statistic: 'Maximum',
    });
    const workerErrors = workers.worker.function.metricErrors({ period: FIVE_MINUTES, statistic: 'Sum' });
    const failedExecutions = lifecycle.stateMachine.metricFailed({ period: FIVE_MINUTES, statistic: 'Sum' });
    const api5xx = api.httpApi.metricServerError({ period: FIVE_MINUTES, statistic: 'Sum' });

    this.alarm(
      'DeadLetterQueueNotEmpty',
      dlqDepth,
      'A chunk failed 5 deliveries and sits in the dead-letter queue: its batch will finalize without it (those lines expire). Inspect the message, fix the cause, redrive it.',
    );
    this.alarm(
      'WorkerErrors',
      workerErrors,
      'The chunk worker crashed or timed out (failures of single requests are not errors; they go to the error file).',
    );
    this.alarm(
      'ExecutionsFailed',
      failedExecutions,
      'A batch execution failed after its retries: the batch may be stuck in validating or finalizing.',
    );
    this.alarm('Api5xx', api5xx, 'The API answered 5xx (an unhandled error in the API Lambda, or a timeout).');
    const queueAge = workers.queue.metricApproximateAgeOfOldestMessage({ period: Duration.minutes(1), statistic: 'Maximum' });
    const functions = Object.entries(props.functions);
    const duration = (statistic: string) =>
      functions.map(([name, fn]) => fn.function.metricDuration({ statistic, period: FIVE_MINUTES, label: `${name} ${statistic}` }));
    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      defaultInterval: Duration.hours(3),
      widgets: [
        [new cloudwatch.AlarmStatusWidget({ title: 'Alarms', alarms: this.alarms, width: 24, height: 3 })],
        [
          new cloudwatch.GraphWidget({
            title: 'API requests and errors',
            left: [api.httpApi.metricCount({ period: FIVE_MINUTES, statistic: 'Sum' })],
            right: [api5xx, api.httpApi.metricClientError({ period: FIVE_MINUTES, statistic: 'Sum' })],
            width: 8,
          }),
          new cloudwatch.GraphWidget({
            title: 'API latency (ms)',
            left: [
              api.httpApi.metricLatency({ period: FIVE_MINUTES, statistic: 'p50' }),
              api.httpApi.metricLatency({ period: FIVE_MINUTES, statistic: 'p99' }),
            ],
            width: 8,
          }),
          new cloudwatch.GraphWidget({
            title: 'Batch executions',
            left: [
              lifecycle.stateMachine.metricStarted({ period: FIVE_MINUTES, statistic: 'Sum' }),
              lifecycle.stateMachine.metricSucceeded({ period: FIVE_MINUTES, statistic: 'Sum' }),
              failedExecutions,
              lifecycle.stateMachine.metricTimedOut({ period: FIVE_MINUTES, statistic: 'Sum' }),
            ],
            width: 8,
          }),
        ],
        [
          new cloudwatch.GraphWidget({
            title: 'Chunk queue',
            left: [
              workers.queue.metricApproximateNumberOfMessagesVisible({
                period: Duration.minutes(1),
                statistic: 'Maximum',
                label: 'waiting',
              }),
              workers.queue.metricApproximateNumberOfMessagesNotVisible({
                period: Duration.minutes(1),
                statistic: 'Maximum',
                label: 'in flight',
              }),
              dlqDepth.with({ label: 'dead letters' }),
            ],
            width: 8,
          }),
          new cloudwatch.GraphWidget({ title: 'Age of oldest chunk message (s)', left: [queueAge], width: 8 }),
          new cloudwatch.GraphWidget({
            title: 'Workers',
            left: [
              workers.worker.function.metric('ConcurrentExecutions', {
                period: Duration.minutes(1),
                statistic: 'Maximum',
                label: 'concurrent',
              }),
            ],
            right: [workerErrors, workers.worker.function.metricThrottles({ period: FIVE_MINUTES, statistic: 'Sum' })],
            width: 8,
          }),
        ],
        [
          new cloudwatch.GraphWidget({ title: 'Lambda duration p50 (ms)', left: duration('p50'), width: 12 }),
          new cloudwatch.GraphWidget({ title: 'Lambda duration p99 (ms)', left: duration('p99'), width: 12 }),
        ],
        [
          // Whatever the handlers publish (EMF, Powertools Metrics) under the namespace: requests,
          // retries, upstream latency, 429s. A search, so new metrics appear without a deploy.
          new cloudwatch.GraphWidget({
            title: `Service metrics (${props.metricsNamespace})`,
            left: [
              new cloudwatch.MathExpression({
                expression: `SEARCH('Namespace="${props.metricsNamespace}"', 'Sum', 300)`,
                label: '',
                period: FIVE_MINUTES,
              }),
            ],
            width: 24,
          }),
        ],
      ],
    });
  }

  private alarm(id: string, metric: cloudwatch.IMetric, description: string): void {
    const alarm = new cloudwatch.Alarm(this, id, {
      metric,
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      alarmDescription: description,
    });
    alarm.addAlarmAction(new actions.SnsAction(this.topic));
    alarm.addOkAction(new actions.SnsAction(this.topic));
    this.alarms.push(alarm);
  }
}
