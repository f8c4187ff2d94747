// What a real AWS account would refuse or get wrong although the stack synthesizes (issue 12),
// one regression test each: alarms the topic's own policy would drop, a state machine that
// cannot be replaced, logs that fill CloudWatch Logs' resource policy, dead letters that expire
// with their queue, an environment past Lambda's 4 KB.
import { App } from 'aws-cdk-lib';
import type { Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { BatchServiceStack } from '../../infra/batch-service-stack.js';
import type { BatchServiceProps, UpstreamRoute } from '../../infra/config.js';
import { VENDED_LOGS_PREFIX } from '../../infra/constructs/lifecycle.js';
import { chunkRetentionDays, DEAD_LETTER_GRACE_DAYS } from '../../infra/constructs/workers.js';
import { environmentSizes, LAMBDA_ENVIRONMENT_LIMIT_BYTES } from '../../infra/lambda-environment.js';
import { ConfigError } from '../../shared/config.js';
import { FULL_PROPS, synthesize } from './support.js';

let template: Template;
beforeAll(() => {
  template = synthesize(undefined, { nag: false }).template;
});

const DAY = 86_400;

/** The stack alone, without cdk-nag or bundling: enough to read the construct tree. */
function build(props: BatchServiceProps): BatchServiceStack {
  return new BatchServiceStack(new App({ context: { 'aws:cdk:bundling-stacks': [] } }), 'Sized', { service: props });
}

function routes(count: number): Record<string, UpstreamRoute> {
  return Object.fromEntries(
    Array.from({ length: count }, (_, i) => [
      `team-model-${i}-*`,
      {
        baseUrl: `https://gateway-${i}.models.internal.example.com/v1`,
        apiKeySecret: `teams/model-gateway-${i}/api-key`,
        maxConcurrency: 64,
      },
    ]),
  );
}

describe('alarms reach the topic', () => {
  it('lets CloudWatch alarms of this account and region publish, beside the TLS-only deny', () => {
    const [topicId] = Object.keys(template.findResources('AWS::SNS::Topic'));
    const policies = Object.values(template.findResources('AWS::SNS::TopicPolicy'));
    expect(policies).toHaveLength(1);
    const statements = policies[0]!.Properties.PolicyDocument.Statement as any[];
    expect(statements.some((s) => s.Effect === 'Deny' && s.Condition?.Bool?.['aws:SecureTransport'] === 'false')).toBe(true);
    const allow = statements.filter((s) => s.Effect === 'Allow');
    expect(allow).toEqual([
      expect.objectContaining({
        Principal: { Service: 'cloudwatch.amazonaws.com' },
        Action: 'sns:Publish',
        Resource: { Ref: topicId },
        Condition: {
          ArnLike: {
            'aws:SourceArn': {
              'Fn::Join': [
                '',
                ['arn:', { Ref: 'AWS::Partition' }, ':cloudwatch:', { Ref: 'AWS::Region' }, ':', { Ref: 'AWS::AccountId' }, ':alarm:*'],
              ],
            },
          },
          StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } },
        },
      }),
    ]);
    // Every alarm notifies that topic.
    for (const alarm of Object.values(template.findResources('AWS::CloudWatch::Alarm'))) {
      expect(alarm.Properties.AlarmActions).toEqual([{ Ref: topicId }]);
    }
  });
});

describe('the state machine', () => {
  it('has a name CloudFormation generates, so a change that replaces it deploys', () => {
    const machine = Object.values(template.findResources('AWS::StepFunctions::StateMachine'))[0]!.Properties;
    expect(machine.StateMachineName).toBeUndefined();
  });

  it('logs to a group under /aws/vendedlogs/, which needs no CloudWatch Logs resource policy of its own', () => {
    const machine = Object.values(template.findResources('AWS::StepFunctions::StateMachine'))[0]!.Properties;
    const [groupId] = machine.LoggingConfiguration.Destinations[0].CloudWatchLogsLogGroup.LogGroupArn['Fn::GetAtt'];
    const name = template.findResources('AWS::Logs::LogGroup')[groupId]!.Properties.LogGroupName as string;
    expect(name.startsWith(VENDED_LOGS_PREFIX)).toBe(true);
    expect(name.length).toBeLessThanOrEqual(512);
    expect(name).toMatch(/^[\w/.#-]+$/);
  });
});

describe('dead letters', () => {
  it('outlive their queue: the dead-letter queue keeps messages days longer than the chunk queue', () => {
    const queues = Object.values(template.findResources('AWS::SQS::Queue'));
    const main = queues.find((q) => q.Properties.RedrivePolicy)!.Properties.MessageRetentionPeriod as number;
    const dead = queues.find((q) => !q.Properties.RedrivePolicy)!.Properties.MessageRetentionPeriod as number;
    expect(dead).toBe(14 * DAY);
    expect(dead - main).toBeGreaterThanOrEqual(DEAD_LETTER_GRACE_DAYS * DAY);
  });

  it('keeps chunks as long as the longest window allows, within that bound', () => {
    expect(chunkRetentionDays(1)).toBe(2);
    expect(chunkRetentionDays(14)).toBe(14 - DEAD_LETTER_GRACE_DAYS);
    const small = build({ limits: { MAX_COMPLETION_WINDOW: '24h' } });
    const queue = small.service.workers.queue.node.defaultChild as { messageRetentionPeriod?: number };
    expect(queue.messageRetentionPeriod).toBe(2 * DAY);
  });
});

describe("Lambda's 4 KB of environment", () => {
  it('leaves room in every function of the full configuration', () => {
    for (const size of environmentSizes(build(FULL_PROPS))) expect(size.bytes, size.path).toBeLessThan(LAMBDA_ENVIRONMENT_LIMIT_BYTES);
  });

  it('takes a dozen routes, and refuses at synth a configuration whose routes would not fit', () => {
    expect(() => build({ upstream: { default: { baseUrl: 'https://api.openai.com/v1' }, routes: routes(12) } })).not.toThrow();
    let error: unknown;
    try {
      build({ upstream: { default: { baseUrl: 'https://api.openai.com/v1' }, routes: routes(30) } });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toMatch(/Worker.*can exceed Lambda's 4096 bytes.*31 upstream routes/);
  });

  it('counts a created secret at the longest ARN it can resolve to', () => {
    const named = environmentSizes(build({ upstream: { routes: { 'a-*': { baseUrl: 'https://a.example.com/v1', apiKeySecret: 'x' } } } }));
    const created = environmentSizes(build({ upstream: { routes: { 'a-*': { baseUrl: 'https://a.example.com/v1' } } } }));
    const worker = (sizes: typeof named) => sizes.find((s) => s.path.endsWith('Workers/Worker'))!.bytes;
    expect(worker(created) - worker(named)).toBeGreaterThanOrEqual(190);
  });
});
