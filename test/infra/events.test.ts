// The events construct on the synthesized template: the drain schedule and stream trigger, EventBridge (default bus
// or the stack's own, PutEvents only for our source), the webhook queue with its dead-letter queue
// and alarm, and the delivery function fed by it.
import { Match, type Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { ENV } from '../../functions/contract.js';
import { checkProps } from '../../infra/config.js';
import { WEBHOOK_MAX_RECEIVES } from '../../infra/constructs/events.js';
import { type Synthesized, synthesize } from './support.js';

let synthesized: Synthesized;
let template: Template;

beforeAll(() => {
  synthesized = synthesize();
  template = synthesized.template;
});

function fn(prefix: string) {
  const found = Object.entries(template.findResources('AWS::Lambda::Function')).filter(([, f]) =>
    String(f.Properties.Description ?? '').startsWith(prefix),
  );
  expect(found).toHaveLength(1);
  return { id: found[0]![0], properties: found[0]![1].Properties as Record<string, any> };
}

function statementsOf(functionId: string): any[] {
  const role = template.findResources('AWS::Lambda::Function')[functionId]!.Properties.Role['Fn::GetAtt'][0];
  return Object.values(template.findResources('AWS::IAM::Policy'))
    .filter((p) => p.Properties.Roles.some((r: any) => r.Ref === role))
    .flatMap((p) => p.Properties.PolicyDocument.Statement);
}

describe('events construct', () => {
  it('drains the outbox every minute with the events function, publishing to the default bus', () => {
    const dispatcher = fn('Status-change events');
    template.hasResourceProperties('AWS::Events::Rule', {
      ScheduleExpression: 'rate(1 minute)',
      Targets: [Match.objectLike({ Arn: { 'Fn::GetAtt': [dispatcher.id, 'Arn'] }, RetryPolicy: { MaximumRetryAttempts: 0 } })],
    });
    expect(dispatcher.properties.Environment.Variables[ENV.eventBusName]).toBe('default');
    expect(dispatcher.properties.Environment.Variables[ENV.webhookQueueUrl]).toBeDefined();
    const putEvents = statementsOf(dispatcher.id).find((s) => s.Action === 'events:PutEvents');
    expect(putEvents.Condition).toEqual({ StringEquals: { 'events:source': 'batch-service' } });
    expect(JSON.stringify(putEvents.Resource)).toContain('event-bus/default');
    template.resourceCountIs('AWS::Events::EventBus', 0);
  });

  it("drains at once when the table's stream shows a batch with events in its outbox, and only then", () => {
    const dispatcher = fn('Status-change events');
    const table = Object.entries(template.findResources('AWS::DynamoDB::Table'))[0]!;
    expect(table[1].Properties.StreamSpecification).toEqual({ StreamViewType: 'NEW_AND_OLD_IMAGES' });
    const mapping = Object.values(template.findResources('AWS::Lambda::EventSourceMapping')).find(
      (m) => m.Properties.FunctionName.Ref === dispatcher.id,
    )!;
    expect(mapping.Properties).toMatchObject({
      EventSourceArn: { 'Fn::GetAtt': [table[0], 'StreamArn'] },
      StartingPosition: 'LATEST',
      MaximumRetryAttempts: 0,
      MaximumBatchingWindowInSeconds: 1,
    });
    const [filter] = mapping.Properties.FilterCriteria.Filters;
    expect(JSON.parse(filter.Pattern)).toEqual({
      eventName: ['INSERT', 'MODIFY'],
      dynamodb: { NewImage: { outboxPk: { S: ['EVENTS'] } } },
    });
  });

  it('feeds the delivery function from the webhook queue, which redrives to a dead-letter queue with an alarm', () => {
    const delivery = fn('Webhook deliveries');
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      FunctionName: { Ref: delivery.id },
      FunctionResponseTypes: ['ReportBatchItemFailures'],
      BatchSize: 10,
    });
    const queues = template.findResources('AWS::SQS::Queue');
    const webhookQueue = Object.entries(queues).find(([id]) => id.includes('WebhookQueue'))!;
    const dlqId = Object.keys(queues).find((id) => id.includes('WebhookDeadLetterQueue'))!;
    expect(webhookQueue[1].Properties.RedrivePolicy).toEqual({
      deadLetterTargetArn: { 'Fn::GetAtt': [dlqId, 'Arn'] },
      maxReceiveCount: WEBHOOK_MAX_RECEIVES,
    });
    expect(webhookQueue[1].Properties.VisibilityTimeout).toBeGreaterThanOrEqual(6 * delivery.properties.Timeout);
    const alarm = Object.values(template.findResources('AWS::CloudWatch::Alarm')).find((a) =>
      JSON.stringify(a.Properties.Dimensions ?? []).includes(dlqId),
    )!;
    expect(alarm.Properties).toMatchObject({ MetricName: 'ApproximateNumberOfMessagesVisible', Threshold: 1 });
    expect(alarm.Properties.AlarmActions).toHaveLength(1);
    // Only the delivery function calls receivers; it cannot touch batches or files.
    const dynamo = statementsOf(delivery.id).filter((s) => String(s.Action).startsWith('dynamodb:'));
    expect(JSON.stringify(dynamo)).not.toContain('BATCH#');
    expect(JSON.stringify(dynamo)).toContain('WEBHOOKDELIVERY#');
    expect(statementsOf(delivery.id).some((s) => String(s.Action).startsWith('s3:'))).toBe(false);
  });

  it("publishes to the stack's own bus when eventBus is 'stack', and to none with 'none'", () => {
    const own = synthesize({ eventBus: 'stack' }, { nag: false }).template;
    own.resourceCountIs('AWS::Events::EventBus', 1);
    const none = synthesize({ eventBus: 'none' }, { nag: false }).template;
    none.resourceCountIs('AWS::Events::EventBus', 0);
    const dispatcher = Object.values(none.findResources('AWS::Lambda::Function')).find((f) =>
      String(f.Properties.Description).startsWith('Status-change events'),
    )!;
    expect(dispatcher.Properties.Environment.Variables[ENV.eventBusName]).toBeUndefined();
    expect(() => checkProps({ eventBus: 'elsewhere' as never })).toThrow(/eventBus/);
  });
});
