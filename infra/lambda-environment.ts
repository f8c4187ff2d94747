// Lambda refuses a function whose environment variables (names and values) exceed 4 KB, and only
// at deploy, after the rest of the stack was built. Upstream routes go into every function's
// UPSTREAM_CONFIG (about 19 routes fill it), so the synth checks each function's environment
// first, counting every reference CloudFormation resolves at deploy (a queue URL, a table name,
// a secret ARN) at the longest it can be.
import { CfnResource, Stack } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import type { IConstruct } from 'constructs';
import { ConfigError } from '../shared/config.js';

export const LAMBDA_ENVIRONMENT_LIMIT_BYTES = 4 * 1024;

/** The longest value a Ref or Fn::GetAtt of a resource of this type resolves to. */
const REFERENCE_BYTES: Record<string, number> = {
  // Bucket names are at most 63 characters.
  'AWS::S3::Bucket': 63,
  // Table names are at most 255 characters.
  'AWS::DynamoDB::Table': 255,
  // https://sqs.<region>.amazonaws.com/<account>/<queue name of at most 80>
  'AWS::SQS::Queue': 160,
  // arn:<partition>:states:<region>:<account>:stateMachine:<name of at most 80>
  'AWS::StepFunctions::StateMachine': 160,
  // arn:<partition>:secretsmanager:<region>:<account>:secret:<generated name>-XXXXXX
  'AWS::SecretsManager::Secret': 200,
};
const PSEUDO_PARAMETER_BYTES: Record<string, number> = {
  'AWS::Partition': 10,
  'AWS::Region': 16,
  'AWS::AccountId': 12,
  'AWS::URLSuffix': 20,
  'AWS::StackName': 128,
};
/** Anything else a reference may resolve to. */
const OTHER_REFERENCE_BYTES = 256;

/**
 * The most bytes `value` (a resolved CloudFormation value) can take once deployed. Lambda counts
 * the environment as the JSON of the variables map, which is what this measures.
 */
function maxBytes(value: unknown, typeOf: (logicalId: string) => string | undefined): number {
  if (typeof value === 'string') return Buffer.byteLength(JSON.stringify(value)) - 2;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value).length;
  if (Array.isArray(value)) return value.reduce((sum: number, item) => sum + maxBytes(item, typeOf), 0);
  const node = (value ?? {}) as Record<string, unknown>;
  if (node['Fn::Join']) {
    const [separator, parts] = node['Fn::Join'] as [string, unknown[]];
    return parts.reduce((sum: number, part) => sum + maxBytes(part, typeOf), separator.length * Math.max(0, parts.length - 1));
  }
  const referenced =
    typeof node.Ref === 'string' ? node.Ref : Array.isArray(node['Fn::GetAtt']) ? String(node['Fn::GetAtt'][0]) : undefined;
  if (referenced !== undefined) {
    return PSEUDO_PARAMETER_BYTES[referenced] ?? REFERENCE_BYTES[typeOf(referenced) ?? ''] ?? OTHER_REFERENCE_BYTES;
  }
  return OTHER_REFERENCE_BYTES;
}

/** Each function under `scope` with the most bytes its environment can take. */
export function environmentSizes(scope: IConstruct): { path: string; bytes: number }[] {
  const stack = Stack.of(scope);
  const types = new Map<string, string>();
  for (const node of stack.node.findAll()) {
    if (CfnResource.isCfnResource(node)) types.set(stack.resolve(node.logicalId) as string, node.cfnResourceType);
  }
  const sizes: { path: string; bytes: number }[] = [];
  for (const node of scope.node.findAll()) {
    if (!(node instanceof lambda.CfnFunction)) continue;
    const environment = stack.resolve(node.environment) as { variables?: Record<string, unknown> } | undefined;
    const variables = environment?.variables ?? {};
    // {"NAME":"value",...}: two quotes and a colon per name, quotes and a comma per value, the braces.
    const bytes = Object.entries(variables).reduce(
      (sum, [name, value]) => sum + Buffer.byteLength(name) + 3 + maxBytes(value, (id) => types.get(id)) + 3,
      1,
    );
    // The path of the ServiceFunction (…/Workers/Worker), above the NodejsFunction and its CfnFunction.
    sizes.push({ path: node.node.path.replace(/\/Function\/Resource$/, ''), bytes });
  }
  return sizes;
}

/** Throws a ConfigError naming every function whose environment could pass Lambda's 4 KB. */
export function checkEnvironmentSizes(scope: IConstruct, upstreamRouteCount: number): void {
  const over = environmentSizes(scope).filter((size) => size.bytes > LAMBDA_ENVIRONMENT_LIMIT_BYTES);
  if (over.length === 0) return;
  const list = over.map((size) => `${size.path} (up to ${size.bytes} bytes)`).join(', ');
  throw new ConfigError(
    `invalid BatchService configuration: the environment of ${list} can exceed Lambda's ${LAMBDA_ENVIRONMENT_LIMIT_BYTES} bytes; ` +
      `the ${upstreamRouteCount} upstream routes are in every function's UPSTREAM_CONFIG: use fewer routes (a glob pattern such as 'gpt-4o*' serves many models)`,
  );
}
