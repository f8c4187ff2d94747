// cdk-nag (v3: a policy validation plugin; findings are acknowledged with CDK's
// Validations.of(construct).acknowledge, one finding id at a time). Rule-level acknowledgments
// sit next to the resource they concern, in the constructs. This file handles the one rule whose
// findings depend on what CDK's grant methods generate: AwsSolutions-IAM5 (wildcards in IAM
// policies). Every finding must match one of the justified patterns below; a new wildcard that
// matches none stays unacknowledged and fails `cdk synth`.
import { Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type { IConstruct } from 'constructs';

/** Patterns of IAM5 findings (`Action::...` or `Resource::...`, as cdk-nag writes them) and why each is acceptable. */
export const JUSTIFIED_WILDCARDS: readonly { finding: RegExp; reason: string }[] = [
  {
    finding: /^Resource::<[A-Za-z0-9]+\.Arn>\/(files|uploads|batches)\/\*$/,
    reason:
      'Objects under one prefix of the service bucket (infra/constructs/access.ts): keys are generated per file, upload and batch at run time.',
  },
  {
    finding: /^Resource::(<[A-Za-z0-9]+\.Arn>|arn:<AWS::Partition>:s3:::[a-z0-9.-]+)\/[A-Za-z0-9_\-.][A-Za-z0-9_\-./]*\*$/,
    reason:
      "Objects under one pipeline's source or destination prefix (infra/constructs/pipelines.ts), in the service bucket or a bucket the configuration names: the objects that arrive and the run ids are known only at run time.",
  },
  {
    finding: /^Resource::<[A-Za-z0-9]+\.Arn>:\*$/,
    reason: "Versions and aliases of one of this service's functions (CDK's LambdaInvoke and Scheduler grants).",
  },
  {
    finding: /^Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:.+:\*$/,
    reason:
      "Executions of this service's state machine, each named for its batch at run time (the start sweep's DescribeExecution, CDK's grantExecution).",
  },
  {
    finding: /^Resource::\*$/,
    reason:
      'For X-Ray (PutTraceSegments, PutTelemetryRecords, GetSampling*) and CloudWatch Logs delivery (CreateLogDelivery and friends) on the state machine role, and dynamodb:ListStreams for a function the table stream invokes (CDK grants the stream itself by ARN): none of these support resource-level permissions.',
  },
];

/** The Resource::* pattern is accepted only for these actions; anything else with Resource::* is left to fail. */
const RESOURCE_STAR_ACTIONS =
  /^(dynamodb:ListStreams|xray:(PutTraceSegments|PutTelemetryRecords|GetSamplingRules|GetSamplingTargets)|logs:(CreateLogDelivery|GetLogDelivery|UpdateLogDelivery|DeleteLogDelivery|ListLogDeliveries|PutResourcePolicy|DescribeResourcePolicies|DescribeLogGroups))$/;

interface Statement {
  Effect?: string;
  Action?: string | string[];
  Resource?: unknown;
}

const asArray = <T>(value: T | T[] | undefined): T[] => (value === undefined ? [] : Array.isArray(value) ? value : [value]);

/** cdk-nag's rendering of a resource: `<LogicalId.Attr>` for GetAtt, `<LogicalId>` for Ref, joins flattened. */
export function flattenReference(node: unknown): string {
  if (node === undefined) return '';
  if (typeof node === 'string') return node.replace(/\$\{/g, '<').replace(/\}/g, '>');
  const value = node as Record<string, unknown>;
  if (value['Fn::Join']) {
    const [delimiter, items] = value['Fn::Join'] as [string, unknown[]];
    return items.map(flattenReference).join(delimiter);
  }
  if (value['Fn::Sub']) return flattenReference(value['Fn::Sub']);
  if (value['Fn::GetAtt']) {
    const [resource, attribute] = value['Fn::GetAtt'] as [unknown, unknown];
    return `<${flattenReference(resource)}.${flattenReference(attribute)}>`;
  }
  if (value['Fn::ImportValue']) return flattenReference(value['Fn::ImportValue']);
  if (value.Ref) return `<${flattenReference(value.Ref)}>`;
  return JSON.stringify(node);
}

/** The IAM5 findings of one policy document, as cdk-nag computes them. */
export function wildcardFindings(document: { Statement?: Statement[] }): { finding: string; actions: string[] }[] {
  const findings = new Map<string, string[]>();
  for (const statement of document.Statement ?? []) {
    if (statement.Effect !== 'Allow') continue;
    const actions = asArray(statement.Action);
    for (const action of actions.filter((a) => a.includes('*'))) findings.set(`Action::${action}`, actions);
    for (const resource of asArray(statement.Resource)
      .map(flattenReference)
      .filter((r) => r.includes('*'))) {
      findings.set(`Resource::${resource}`, [...(findings.get(`Resource::${resource}`) ?? []), ...actions]);
    }
  }
  return [...findings].map(([finding, actions]) => ({ finding, actions }));
}

/** Acknowledges every IAM5 finding under `scope` that a justified pattern covers. Call it after the last grant. */
export function acknowledgeJustifiedWildcards(scope: IConstruct): void {
  for (const node of scope.node.findAll()) {
    if (!(node instanceof iam.CfnPolicy)) continue;
    const document = Stack.of(node).resolve(node.policyDocument) as { Statement?: Statement[] };
    for (const { finding, actions } of wildcardFindings(document)) {
      const justified = JUSTIFIED_WILDCARDS.find((w) => w.finding.test(finding));
      if (!justified) continue;
      if (finding === 'Resource::*' && !actions.every((action) => RESOURCE_STAR_ACTIONS.test(action))) continue;
      Validations.of(node).acknowledge({ id: `AwsSolutions-IAM5[${finding}]`, reason: justified.reason });
    }
  }
}
