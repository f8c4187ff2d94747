// Builds the stack the infra tests assert on, once per test file. esbuild bundling is skipped
// (`aws:cdk:bundling-stacks` = []): the tests are about the template, and `npm run synth`
// bundles for real.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App, Validations } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as cxapi from 'aws-cdk-lib/cx-api';
import { AwsSolutionsChecks } from 'cdk-nag';
import { BatchServiceStack } from '../../infra/batch-service-stack.js';
import type { BatchServiceProps } from '../../infra/config.js';

export interface Synthesized {
  stack: BatchServiceStack;
  template: Template;
  /** The policy validation report (cdk-nag's findings, acknowledged or not). */
  report: ValidationReport;
}

export interface ValidationReport {
  pluginReports: {
    summary: { pluginName: string; status: string };
    violations: {
      ruleName: string;
      severity?: string;
      description?: string;
      violatingResources?: unknown[];
      violatingConstructs?: unknown[];
    }[];
  }[];
}

/** A service with every optional part: upstream routes (a created secret and a named one), pipelines (scheduled, drop, another bucket). */
export const FULL_PROPS: BatchServiceProps = {
  upstream: {
    default: { baseUrl: 'https://api.openai.com/v1' },
    routes: {
      'qwen-*': { baseUrl: 'https://dashscope.aliyuncs.com/compatible-mode/v1', apiKeySecret: 'team/dashscope-key', maxConcurrency: 32 },
      'llama-local': { baseUrl: 'http://vllm.internal:8000/v1', apiKeySecret: null },
    },
  },
  workerMaxConcurrency: 50,
  limits: { MIN_COMPLETION_WINDOW: '1h', MAX_FILE_BYTES: 100 * 1024 * 1024 },
  alarmEmail: 'oncall@example.com',
  pipelines: [
    {
      name: 'nightly-reviews',
      project: 'reviews',
      schedule: 'cron(0 2 * * ? *)',
      timeZone: 'Europe/Paris',
      source: 'inbox/reviews/{yyyy}-{MM}-{dd}.jsonl',
      destination: 'outbox/reviews/nightly/',
      endpoint: '/v1/chat/completions',
      metadata: { job: 'reviews' },
    },
    {
      name: 'drop',
      project: 'reviews',
      trigger: 'object-created',
      source: 'inbox/reviews/drop/',
      destination: 'outbox/reviews/drop/',
      endpoint: '/v1/chat/completions',
    },
    {
      name: 'partner-feed',
      project: 'evals',
      trigger: 'object-created',
      source: 's3://partner-feed-bucket/exports/',
      destination: 's3://partner-results-bucket/batch-results/',
      endpoint: '/v1/embeddings',
    },
  ],
};

/** `nag: false` leaves cdk-nag out (its report is then empty): a third of the time, for tests about other things. */
export function synthesize(props: BatchServiceProps = FULL_PROPS, options: { nag?: boolean } = {}): Synthesized {
  const app = new App({ context: { 'aws:cdk:bundling-stacks': [] } });
  if (options.nag !== false) Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  const stack = new BatchServiceStack(app, 'BatchServiceTest', { service: props });
  // Throws, with the report, if cdk-nag has unacknowledged errors.
  const assembly = app.synth();
  const reportFile = join(assembly.directory, cxapi.VALIDATION_REPORT_FILE);
  const report = (existsSync(reportFile) ? JSON.parse(readFileSync(reportFile, 'utf8')) : { pluginReports: [] }) as ValidationReport;
  return { stack, template: Template.fromStack(stack), report };
}

type Json = unknown;

/**
 * Renders an intrinsic-laden value (Fn::Join, Fn::GetAtt, Ref) as a plain string with
 * placeholder ARNs, the way CloudFormation would with real ones.
 */
export function resolveIntrinsics(value: Json): string {
  if (typeof value === 'string') return value;
  const node = value as Record<string, Json>;
  if (node['Fn::Join']) {
    const [separator, parts] = node['Fn::Join'] as [string, Json[]];
    return parts.map(resolveIntrinsics).join(separator);
  }
  if (node['Fn::GetAtt']) {
    const [logicalId] = node['Fn::GetAtt'] as [string, string];
    return `arn:aws:lambda:us-east-1:123456789012:function:${logicalId}`;
  }
  if (node.Ref) {
    const ref = node.Ref as string;
    if (ref === 'AWS::Partition') return 'aws';
    if (ref === 'AWS::Region') return 'us-east-1';
    if (ref === 'AWS::AccountId') return '123456789012';
    if (ref === 'AWS::URLSuffix') return 'amazonaws.com';
    return ref;
  }
  throw new Error(`cannot resolve ${JSON.stringify(value)}`);
}

/** Every policy statement of every IAM policy and role in the template. */
export function policyStatements(
  template: Template,
): { source: string; statement: { Action?: string | string[]; Resource?: unknown; Effect?: string } }[] {
  const out: ReturnType<typeof policyStatements> = [];
  for (const [id, resource] of Object.entries(template.findResources('AWS::IAM::Policy'))) {
    for (const statement of resource.Properties.PolicyDocument.Statement) out.push({ source: id, statement });
  }
  for (const [id, resource] of Object.entries(template.findResources('AWS::IAM::Role'))) {
    for (const policy of resource.Properties.Policies ?? []) {
      for (const statement of policy.PolicyDocument.Statement) out.push({ source: id, statement });
    }
  }
  return out;
}
