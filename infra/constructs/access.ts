// Least privilege: what each function does to the bucket and the table, by key prefix and by
// action, in one table (FUNCTION_ACCESS), and the grants that say exactly that. No function gets
// CDK's grantReadWrite (which includes legal holds, retention, tagging and ACLs on every key) or
// full table access (Scan, BatchWriteItem, DeleteItem on any item): the API cannot delete or write
// an API key, a worker cannot touch files or uploads, and only `npm run keys` (an operator's own
// credentials) manages keys.
//
// test/infra/least-privilege.test.ts runs the real handlers and checks every S3 and DynamoDB call
// they make against the synthesized policies: a new call a function makes needs its line here.
import type * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import {
  BY_PROJECT_INDEX,
  ITEM_KEY_PREFIXES,
  type ItemKind,
  OPEN_INDEX,
  OUTBOX_INDEX,
} from '../../shared/adapters/aws/dynamo-meta-store.js';

/** The bucket's top-level prefixes (shared/batch/keys.ts, shared/uploads/model.ts). */
export const BUCKET_PREFIXES = {
  /** Input, output and error files. */
  files: 'files/',
  /** Parts of uploads in progress (the Uploads API). */
  uploads: 'uploads/',
  /** A batch's scratch: its chunk plan, chunk results, checkpoints, unrun lines. */
  batches: 'batches/',
} as const;
export type BucketPrefix = keyof typeof BUCKET_PREFIXES;

export interface BucketAccess {
  /** GetObject (and HeadObject, ranged GETs, presigned GETs). */
  readonly read?: readonly BucketPrefix[];
  /** PutObject (single and multipart) and AbortMultipartUpload. */
  readonly write?: readonly BucketPrefix[];
  readonly delete?: readonly BucketPrefix[];
  /** ListBucket, only for keys under these prefixes. */
  readonly list?: readonly BucketPrefix[];
}

export interface TableAccess {
  /** GetItem on items of these kinds. */
  readonly read?: readonly ItemKind[];
  /** PutItem and UpdateItem (conditional writes, counters) on items of these kinds. */
  readonly write?: readonly ItemKind[];
  readonly delete?: readonly ItemKind[];
  /** Query on the byProject index (lists a project's files and batches). */
  readonly queryByProject?: boolean;
  /** Query on the outbox index (the status-change events and the webhook deliveries waiting). */
  readonly queryOutbox?: boolean;
  /** Query on the open index (the batches that are not final). */
  readonly queryOpen?: boolean;
}

export interface FunctionAccess {
  readonly bucket: BucketAccess;
  readonly table: TableAccess;
}

/** Who does what (the steps are shared/batch/steps.ts; the API is shared/api). */
export const FUNCTION_ACCESS = {
  api: {
    // Uploads, downloads (streamed or presigned), deletes; upload parts joined into a file.
    bucket: { read: ['files', 'uploads'], write: ['files', 'uploads'], delete: ['files', 'uploads'], list: ['uploads'] },
    // Reads API keys (and signed keys' encrypted secrets) to authenticate; never writes or deletes one.
    table: {
      read: ['file', 'batch', 'upload', 'uploadPart', 'apiKey', 'signingKey', 'webhookEndpoint'],
      write: ['file', 'batch', 'upload', 'uploadPart', 'webhookEndpoint'],
      delete: ['file', 'webhookEndpoint'],
      queryByProject: true,
      // The project's open batches: a running batch's estimate, and the create's window check.
      queryOpen: true,
    },
  },
  validate: {
    // Reads the input, writes the chunk plan; a batch that fails releases its input (and deletes a
    // deleted input's bytes with the last pin).
    bucket: { read: ['files'], write: ['batches'], delete: ['files'] },
    table: { read: ['file', 'batch'], write: ['file', 'batch'], delete: ['file'] },
  },
  enqueue: {
    // Admission: takes the batch's quota (the quota counters), marks it admitted.
    bucket: { read: ['batches'] },
    table: { read: ['batch', 'quota'], write: ['batch', 'quota'] },
  },
  waitForChunks: {
    bucket: {},
    table: { read: ['batch'], write: ['batch'] },
  },
  finalize: {
    // Merges chunk results into the output and error files (reading the input for lines that never
    // ran), deletes the scratch, releases the input.
    // Gives the batch's quota back and admits the project's batches that waited for it (its open
    // batches, their plans, and their chunks on the queue).
    bucket: { read: ['files', 'batches'], write: ['files', 'batches'], delete: ['files', 'batches'], list: ['batches'] },
    table: { read: ['file', 'batch', 'quota'], write: ['file', 'batch', 'quota'], delete: ['file'], queryOpen: true },
  },
  worker: {
    // Its chunk's byte range of the input; its results and checkpoints under batches/.
    bucket: { read: ['files', 'batches'], write: ['batches'], delete: ['batches'], list: ['batches'] },
    table: { read: ['batch'], write: ['batch'] },
  },
  pipelineRun: {
    // Imports a pipeline's source object as an input file (deleting it again when the checks refuse
    // it) and creates the batch as POST /v1/batches does; records the run. The source and destination
    // prefixes are granted by infra/constructs/pipelines.ts.
    bucket: { write: ['files'], delete: ['files'] },
    table: { read: ['file', 'batch', 'pipelineRun'], write: ['file', 'batch', 'pipelineRun'] },
  },
  pipelineDestinations: {
    // Added to the events function where there are pipelines: it copies an ended batch's output and
    // error files to the run's destination (granted by prefix in pipelines.ts) and records the run.
    bucket: { read: ['files'] },
    table: { read: ['pipelineRun'], write: ['pipelineRun'] },
  },
  pipelineApi: {
    // Added to the API where there are pipelines: GET /v1/x/pipelines/{name}/runs/{run_id}.
    bucket: {},
    table: { read: ['pipelineRun'] },
  },
  events: {
    // Drains the outbox (acknowledging a batch's events), records webhook deliveries for the
    // project's endpoints, and finds the overdue ones.
    bucket: {},
    table: {
      read: ['batch', 'webhookEndpoint', 'webhookDelivery'],
      write: ['batch', 'webhookDelivery'],
      queryByProject: true,
      queryOutbox: true,
    },
  },
  webhookDelivery: {
    // One attempt: claims the delivery, reads its endpoint's URL and secrets, records the outcome.
    bucket: {},
    table: { read: ['webhookDelivery', 'webhookEndpoint'], write: ['webhookDelivery'], delete: ['webhookDelivery'] },
  },
  startSweep: {
    // Lists the unfinished batches; fails one that never started (releasing its input, and deleting
    // a deleted input's bytes with the last pin).
    bucket: { delete: ['files'] },
    table: { read: ['batch', 'file'], write: ['batch', 'file'], delete: ['file'], queryOpen: true },
  },
  fileReaper: {
    // Deletes an expired file's object; reads the batches that pinned it and puts back the record
    // of a file a running batch still reads.
    bucket: { delete: ['files'] },
    table: { read: ['batch'], write: ['file'] },
  },
} as const satisfies Record<string, FunctionAccess>;

/** Grants `grantee` exactly `access` on the service's bucket. */
export function grantBucketAccess(grantee: iam.IGrantable, bucket: s3.IBucket, access: BucketAccess): void {
  const objects = (prefixes: readonly BucketPrefix[] | undefined) =>
    (prefixes ?? []).map((p) => bucket.arnForObjects(`${BUCKET_PREFIXES[p]}*`));
  const allow = (actions: string[], prefixes: readonly BucketPrefix[] | undefined) => {
    if (!prefixes?.length) return;
    grantee.grantPrincipal.addToPrincipalPolicy(new iam.PolicyStatement({ actions, resources: objects(prefixes) }));
  };
  allow(['s3:GetObject'], access.read);
  allow(['s3:PutObject', 's3:AbortMultipartUpload'], access.write);
  allow(['s3:DeleteObject'], access.delete);
  if (access.list?.length) {
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['s3:ListBucket'],
        resources: [bucket.bucketArn],
        conditions: { StringLike: { 's3:prefix': access.list.map((p) => `${BUCKET_PREFIXES[p]}*`) } },
      }),
    );
  }
}

/**
 * Grants `grantee` exactly `access` on the service's table. Item actions carry
 * `ForAllValues:StringLike dynamodb:LeadingKeys`: the partition key of every item the request
 * names must start with one of the granted kinds' prefixes.
 */
export function grantTableAccess(grantee: iam.IGrantable, table: dynamodb.ITable, access: TableAccess): void {
  const onItems = (actions: string[], kinds: readonly ItemKind[] | undefined) => {
    if (!kinds?.length) return;
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions,
        resources: [table.tableArn],
        conditions: { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': kinds.map((kind) => `${ITEM_KEY_PREFIXES[kind]}*`) } },
      }),
    );
  };
  onItems(['dynamodb:GetItem'], access.read);
  onItems(['dynamodb:PutItem', 'dynamodb:UpdateItem'], access.write);
  onItems(['dynamodb:DeleteItem'], access.delete);
  if (access.queryByProject) {
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['dynamodb:Query'],
        resources: [`${table.tableArn}/index/${BY_PROJECT_INDEX}`],
      }),
    );
  }
  if (access.queryOpen) {
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: ['dynamodb:Query'], resources: [`${table.tableArn}/index/${OPEN_INDEX}`] }),
    );
  }
  if (access.queryOutbox) {
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: ['dynamodb:Query'], resources: [`${table.tableArn}/index/${OUTBOX_INDEX}`] }),
    );
  }
}

export function grantAccess(
  grantee: iam.IGrantable,
  storage: { bucket: s3.IBucket; table: dynamodb.ITable },
  access: FunctionAccess,
): void {
  grantBucketAccess(grantee, storage.bucket, access.bucket);
  grantTableAccess(grantee, storage.table, access.table);
}
