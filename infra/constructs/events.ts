// Status-change events and webhook deliveries in AWS:
//   - the events function: drains the outbox to EventBridge (the default bus or the stack's own) and
//     records webhook deliveries onto their queue, as soon as the table's stream shows a batch with
//     events in its outbox (about a second after the change), and every minute in case a stream
//     invocation failed; the minute's run also puts overdue deliveries back on the queue;
//   - the webhook queue (one message per attempt, delayed until due) with its dead-letter queue and
//     an alarm on it, feeding the delivery function, which alone calls receivers: the API never
//     waits on one (except POST /webhook_endpoints/{id}/test, which is a request to do just that).
import { Duration, Stack } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as events from 'aws-cdk-lib/aws-events';
import * as eventTargets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as lambdaEventSources from 'aws-cdk-lib/aws-lambda-event-sources';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { ENV, HANDLERS } from '../../functions/contract.js';
import { OUTBOX_PARTITION } from '../../shared/adapters/aws/dynamo-meta-store.js';
import { BUS_SOURCE } from '../../shared/events/bus.js';
import { FUNCTION_ACCESS, grantAccess } from './access.js';
import { ServiceFunction } from './service-function.js';
import type { Storage } from './storage.js';

export interface EventsProps {
  readonly storage: Storage;
  readonly environment: Record<string, string>;
  readonly logRetentionDays: number;
  readonly eventBus: 'default' | 'stack' | 'none';
}

/** Receives of a delivery message before it is parked (the MetaStore or SQS failing, never the receiver). */
export const WEBHOOK_MAX_RECEIVES = 5;
/** The delivery function's timeout: one attempt (WEBHOOK_TIMEOUT, 10 s by default) and the writes around it. */
export const WEBHOOK_FUNCTION_TIMEOUT_SECONDS = 60;

export class Events extends Construct {
  /** The stack's own bus, when eventBus is 'stack'. */
  readonly bus: events.EventBus | undefined;
  readonly busName: string | undefined;
  readonly webhookQueue: sqs.Queue;
  readonly webhookDeadLetterQueue: sqs.Queue;
  readonly dispatcher: ServiceFunction;
  readonly delivery: ServiceFunction;
  readonly deadLetterAlarm: cloudwatch.Alarm;

  constructor(scope: Construct, id: string, props: EventsProps) {
    super(scope, id);
    this.bus = props.eventBus === 'stack' ? new events.EventBus(this, 'Bus', { description: 'Batch status changes' }) : undefined;
    this.busName = props.eventBus === 'none' ? undefined : (this.bus?.eventBusName ?? 'default');

    this.webhookDeadLetterQueue = new sqs.Queue(this, 'WebhookDeadLetterQueue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    this.webhookQueue = new sqs.Queue(this, 'WebhookQueue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      visibilityTimeout: Duration.seconds(WEBHOOK_FUNCTION_TIMEOUT_SECONDS * 6),
      // Messages are delayed 15 minutes at most and chained: none waits for long.
      retentionPeriod: Duration.days(4),
      deadLetterQueue: { queue: this.webhookDeadLetterQueue, maxReceiveCount: WEBHOOK_MAX_RECEIVES },
    });

    const environment = {
      ...props.environment,
      [ENV.webhookQueueUrl]: this.webhookQueue.queueUrl,
      ...(this.busName ? { [ENV.eventBusName]: this.busName } : {}),
    };

    this.dispatcher = new ServiceFunction(this, 'Dispatcher', {
      entry: HANDLERS.events,
      description: 'Status-change events: drain the outbox to EventBridge and the webhook queue',
      environment,
      logRetentionDays: props.logRetentionDays,
      memorySize: 512,
      // Two drains that overlap are harmless (events go out at least once; acks are conditional).
      timeout: Duration.seconds(60),
    });
    grantAccess(this.dispatcher.function, props.storage, FUNCTION_ACCESS.events);
    this.webhookQueue.grantSendMessages(this.dispatcher.function);
    if (this.busName) {
      const busArn =
        this.bus?.eventBusArn ?? Stack.of(this).formatArn({ service: 'events', resource: 'event-bus', resourceName: 'default' });
      this.dispatcher.function.addToRolePolicy(
        new iam.PolicyStatement({
          actions: ['events:PutEvents'],
          resources: [busArn],
          conditions: { StringEquals: { 'events:source': BUS_SOURCE } },
        }),
      );
    }
    // A write that leaves events in a batch's outbox (a status change; any later write while they
    // wait) starts a drain. Lambda's reads of the stream cost nothing, and other writes are filtered
    // out before any invocation. A failing drain is not retried here: the minute's run takes it.
    this.dispatcher.function.addEventSource(
      new lambdaEventSources.DynamoEventSource(props.storage.table, {
        startingPosition: lambda.StartingPosition.LATEST,
        batchSize: 100,
        maxBatchingWindow: Duration.seconds(1),
        retryAttempts: 0,
        filters: [
          lambda.FilterCriteria.filter({
            eventName: lambda.FilterRule.or('INSERT', 'MODIFY'),
            dynamodb: { NewImage: { outboxPk: { S: lambda.FilterRule.isEqual(OUTBOX_PARTITION) } } },
          }),
        ],
      }),
    );
    new events.Rule(this, 'DrainSchedule', {
      description: 'Drain the status-change outbox every minute',
      schedule: events.Schedule.rate(Duration.minutes(1)),
      targets: [new eventTargets.LambdaFunction(this.dispatcher.function, { retryAttempts: 0 })],
    });

    this.delivery = new ServiceFunction(this, 'Delivery', {
      entry: HANDLERS.webhookDelivery,
      description: 'Webhook deliveries: one signed attempt per message, the next one queued with its backoff',
      environment,
      logRetentionDays: props.logRetentionDays,
      memorySize: 256,
      timeout: Duration.seconds(WEBHOOK_FUNCTION_TIMEOUT_SECONDS),
    });
    grantAccess(this.delivery.function, props.storage, FUNCTION_ACCESS.webhookDelivery);
    this.webhookQueue.grantSendMessages(this.delivery.function);
    this.delivery.function.addEventSource(
      new lambdaEventSources.SqsEventSource(this.webhookQueue, {
        batchSize: 10,
        reportBatchItemFailures: true,
        // Receivers are the team's own: a burst of a thousand endings reaches them at this pace.
        maxConcurrency: 10,
      }),
    );

    this.deadLetterAlarm = new cloudwatch.Alarm(this, 'WebhookDeadLetterQueueNotEmpty', {
      metric: this.webhookDeadLetterQueue.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(1), statistic: 'Maximum' }),
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      alarmDescription:
        'A webhook delivery message failed 5 times (the table or SQS failing, not a receiver). The delivery is still in the table; the events function puts it back on the queue.',
    });
  }
}
