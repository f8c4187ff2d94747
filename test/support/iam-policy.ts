// A small IAM policy evaluator for the synthesized template: does a role's identity policy allow
// this action on this resource, with these request facts (DynamoDB's leading keys, S3's list
// prefix)? Resources are compared in cdk-nag's rendering (`<Bucket1234.Arn>/files/x`, see
// infra/nag.ts flattenReference), so no account or name has to be invented. Only what the
// stack's policies use is understood; any other condition key counts as not satisfied, so an
// unexpected condition can only make this stricter than IAM, never looser.
import type { Template } from 'aws-cdk-lib/assertions';
import { flattenReference } from '../../infra/nag.js';
import type { AwsCall } from './aws-harness.js';

export interface PolicyStatement {
  Effect?: string;
  Action?: string | string[];
  Resource?: unknown;
  Condition?: Record<string, Record<string, string | string[]>>;
}

export interface IamRequest {
  action: string;
  /** In cdk-nag's rendering, e.g. `<ServiceStorageTable1234.Arn>`. */
  resource: string;
  /** dynamodb:LeadingKeys: the partition keys the request names. */
  leadingKeys?: string[];
  /** s3:prefix of a ListBucket. */
  s3Prefix?: string;
}

const asArray = <T>(value: T | T[] | undefined): T[] => (value === undefined ? [] : Array.isArray(value) ? value : [value]);

function glob(pattern: string, value: string, ignoreCase = false): boolean {
  const source = pattern
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${source}$`, ignoreCase ? 'i' : '').test(value);
}

/** Every statement of the identity policies attached to the role (inline or AWS::IAM::Policy). */
export function roleStatements(template: Template, roleLogicalId: string): PolicyStatement[] {
  const statements: PolicyStatement[] = [];
  for (const policy of Object.values(template.findResources('AWS::IAM::Policy'))) {
    const roles = asArray(policy.Properties.Roles as { Ref?: string }[]);
    if (roles.some((role) => role.Ref === roleLogicalId)) statements.push(...asArray(policy.Properties.PolicyDocument.Statement));
  }
  const role = template.findResources('AWS::IAM::Role')[roleLogicalId];
  for (const inline of role?.Properties.Policies ?? []) statements.push(...asArray(inline.PolicyDocument.Statement));
  return statements as PolicyStatement[];
}

function conditionHolds(condition: PolicyStatement['Condition'], request: IamRequest): boolean {
  for (const [operator, keys] of Object.entries(condition ?? {})) {
    for (const [key, expected] of Object.entries(keys)) {
      const patterns = asArray(expected);
      if (operator === 'ForAllValues:StringLike' && key === 'dynamodb:LeadingKeys') {
        // Every leading key of the request must match one pattern (an empty set passes, as in IAM).
        if (!(request.leadingKeys ?? []).every((value) => patterns.some((p) => glob(p, value)))) return false;
      } else if (operator === 'StringLike' && key === 's3:prefix') {
        if (request.s3Prefix === undefined || !patterns.some((p) => glob(p, request.s3Prefix!))) return false;
      } else {
        return false;
      }
    }
  }
  return true;
}

function matches(statement: PolicyStatement, request: IamRequest): boolean {
  const actions = asArray(statement.Action);
  if (!actions.some((action) => glob(action, request.action, true))) return false;
  const resources = asArray(statement.Resource).map(flattenReference);
  if (!resources.some((resource) => glob(resource, request.resource))) return false;
  return conditionHolds(statement.Condition, request);
}

/** Allowed: some Allow statement matches and no Deny does. */
export function isAllowed(statements: readonly PolicyStatement[], request: IamRequest): boolean {
  if (statements.some((s) => s.Effect === 'Deny' && matches(s, request))) return false;
  return statements.some((s) => s.Effect === 'Allow' && matches(s, request));
}

/** The partition key of a DynamoDB key, raw (`{ pk: 'FILE#x' }`) or marshalled (`{ pk: { S: 'FILE#x' } }`). */
function partitionKey(key: unknown): string | undefined {
  const pk = (key as Record<string, unknown> | undefined)?.pk;
  if (typeof pk === 'string') return pk;
  return (pk as { S?: string } | undefined)?.S;
}

/**
 * The IAM requests an S3 or DynamoDB call makes, with `bucket` and `table` in cdk-nag's rendering
 * (`<BucketLogicalId.Arn>`, `<TableLogicalId.Arn>`).
 */
export function iamRequests(call: AwsCall, resources: { bucket: string; table: string }): IamRequest[] {
  const input = call.input;
  if (call.service === 'S3') {
    const object = (key: unknown) => `${resources.bucket}/${String(key)}`;
    switch (call.command) {
      case 'GetObject':
      case 'HeadObject':
        return [{ action: 's3:GetObject', resource: object(input.Key) }];
      case 'PutObject':
      case 'CreateMultipartUpload':
      case 'UploadPart':
      case 'CompleteMultipartUpload':
        return [{ action: 's3:PutObject', resource: object(input.Key) }];
      case 'UploadPartCopy': {
        const source = String(input.CopySource).replace(/^\/?[^/]+\//, '');
        return [
          { action: 's3:PutObject', resource: object(input.Key) },
          { action: 's3:GetObject', resource: object(decodeURIComponent(source)) },
        ];
      }
      case 'AbortMultipartUpload':
        return [{ action: 's3:AbortMultipartUpload', resource: object(input.Key) }];
      case 'DeleteObject':
        return [{ action: 's3:DeleteObject', resource: object(input.Key) }];
      case 'DeleteObjects':
        return ((input.Delete as { Objects?: { Key?: string }[] }).Objects ?? []).map((o) => ({
          action: 's3:DeleteObject',
          resource: object(o.Key),
        }));
      case 'ListObjectsV2':
        return [{ action: 's3:ListBucket', resource: resources.bucket, s3Prefix: String(input.Prefix ?? '') }];
      default:
        return [{ action: `s3:${call.command}`, resource: resources.bucket }];
    }
  }
  const action = `dynamodb:${call.command}`;
  switch (call.command) {
    case 'GetItem':
    case 'PutItem':
    case 'UpdateItem':
    case 'DeleteItem': {
      const pk = partitionKey(call.command === 'PutItem' ? input.Item : input.Key);
      return [{ action, resource: resources.table, leadingKeys: pk === undefined ? [] : [pk] }];
    }
    case 'Query':
      return [{ action, resource: input.IndexName ? `${resources.table}/index/${String(input.IndexName)}` : resources.table }];
    default:
      return [{ action, resource: resources.table }];
  }
}
