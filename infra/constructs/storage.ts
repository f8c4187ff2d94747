// Where the service keeps its data: one S3 bucket for file bytes, chunk plans and chunk results,
// and one DynamoDB table for files, batches, uploads and API keys. Both are retained by default
// when the stack is destroyed: they hold the teams' data.
import { Duration, type RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { BY_PROJECT_INDEX, metaTableDefinition, TTL_ATTRIBUTE } from '../../shared/adapters/aws/dynamo-meta-store.js';
import { DEFAULT_FILE_RETENTION_SECONDS } from '../../shared/batch/files.js';

export interface StorageProps {
  readonly removalPolicy: RemovalPolicy;
  /** The longest completion window a batch may ask for (MAX_COMPLETION_WINDOW), in days. */
  readonly maxCompletionWindowDays: number;
}

/**
 * Lifetimes of the bucket's objects, by prefix (shared/batch/keys.ts; uploads/ for the Uploads
 * API). S3 lifecycle filters match prefixes, not patterns, so `batches/<id>/chunks/` cannot be
 * named on its own: the rule covers all of `batches/<id>/`, which is scratch (the chunk plan,
 * chunk results, unrun lines) needed only while its batch runs.
 */
export const OBJECT_LIFETIMES = {
  /** Parts of an upload in progress: an upload lives an hour, so two days is plenty. */
  uploads: { prefix: 'uploads/', days: 2 },
  /**
   * files/: a backstop only. The file reaper deletes a file's object when the table's TTL removes
   * its record (shared/batch/file-expiry.ts), and a batch's pin keeps that record up to a day past
   * the batch's window, so the object must outlive the longest retention (expires_after is at most
   * 30 days) plus the longest window plus that day: this rule adds a week's margin to the first two
   * (52 days with 336-hour windows). Only an object the reaper missed is left to it.
   */
  files: { prefix: 'files/', retentionDays: DEFAULT_FILE_RETENTION_SECONDS / 86_400, marginDays: 8 },
  /** batches/: a batch's scratch outlives its longest window plus a week of drain and finalization. */
  batchScratchMarginDays: 7,
} as const;

export class Storage extends Construct {
  readonly bucket: s3.Bucket;
  readonly table: dynamodb.Table;

  /**
   * The bucket sends its object events to EventBridge (for drop pipelines). Set on the bucket's own
   * NotificationConfiguration, not with CDK's eventBridgeEnabled, which adds a custom resource and
   * a Lambda to set it.
   */
  sendEventsToEventBridge(): void {
    (this.bucket.node.defaultChild as s3.CfnBucket).addPropertyOverride(
      'NotificationConfiguration.EventBridgeConfiguration.EventBridgeEnabled',
      true,
    );
  }

  constructor(scope: Construct, id: string, props: StorageProps) {
    super(scope, id);

    this.bucket = new s3.Bucket(this, 'Bucket', {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      versioned: false,
      removalPolicy: props.removalPolicy,
      // The console fetches a large download through the API's redirect to a presigned URL: the
      // browser reads that answer only if the bucket allows cross-origin GETs. Any origin may, since
      // the URL's signature is the whole of the access (no cookies, no other method).
      cors: [{ allowedMethods: [s3.HttpMethods.GET], allowedOrigins: ['*'], maxAge: 3600 }],
      lifecycleRules: [
        // A multipart upload that never completed (a finalizer or an upload that died) costs
        // storage while invisible: abort it.
        { id: 'abort-incomplete-multipart', abortIncompleteMultipartUploadAfter: Duration.days(1) },
        { id: 'expire-upload-parts', prefix: OBJECT_LIFETIMES.uploads.prefix, expiration: Duration.days(OBJECT_LIFETIMES.uploads.days) },
        {
          id: 'expire-files',
          prefix: OBJECT_LIFETIMES.files.prefix,
          expiration: Duration.days(
            OBJECT_LIFETIMES.files.retentionDays + Math.ceil(props.maxCompletionWindowDays) + OBJECT_LIFETIMES.files.marginDays,
          ),
        },
        // Finalization deletes a batch's chunk results as it merges them; this reaps what a batch
        // whose finalization never ran left behind, and the plans of finished batches.
        {
          id: 'expire-batch-scratch',
          prefix: 'batches/',
          expiration: Duration.days(Math.ceil(props.maxCompletionWindowDays) + OBJECT_LIFETIMES.batchScratchMarginDays),
        },
      ],
    });

    Validations.of(this.bucket).acknowledge({
      id: 'AwsSolutions-S1',
      reason:
        'Server access logs would need a second bucket and log every chunk read; clients never reach this bucket except through short-lived presigned GETs the API issues, and the API access log records who asked. CloudTrail data events can be enabled by the account if object-level audit is required.',
    });

    // Mirrors metaTableDefinition() exactly: the adapter, its tests on dynalite and this table agree.
    const definition = metaTableDefinition('unused');
    const keyOf = (name: string): dynamodb.Attribute => {
      const attribute = definition.AttributeDefinitions!.find((a) => a.AttributeName === name)!;
      return { name, type: attribute.AttributeType === 'S' ? dynamodb.AttributeType.STRING : dynamodb.AttributeType.NUMBER };
    };
    const partitionKey = definition.KeySchema!.find((k) => k.KeyType === 'HASH')!.AttributeName!;
    this.table = new dynamodb.Table(this, 'Table', {
      partitionKey: keyOf(partitionKey),
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      timeToLiveAttribute: TTL_ATTRIBUTE,
      // The events function reads it to drain a batch's outbox within a second of a status change.
      stream: dynamodb.StreamViewType.NEW_AND_OLD_IMAGES,
      encryption: dynamodb.TableEncryption.AWS_MANAGED,
      removalPolicy: props.removalPolicy,
    });
    for (const index of definition.GlobalSecondaryIndexes ?? []) {
      const hash = index.KeySchema!.find((k) => k.KeyType === 'HASH')!.AttributeName!;
      const range = index.KeySchema!.find((k) => k.KeyType === 'RANGE')?.AttributeName;
      this.table.addGlobalSecondaryIndex({
        indexName: index.IndexName!,
        partitionKey: keyOf(hash),
        ...(range ? { sortKey: keyOf(range) } : {}),
        projectionType: dynamodb.ProjectionType.ALL,
      });
    }
    if (!definition.GlobalSecondaryIndexes?.some((index) => index.IndexName === BY_PROJECT_INDEX)) {
      throw new Error(`metaTableDefinition() no longer defines the ${BY_PROJECT_INDEX} index the API lists by`);
    }
  }
}
