// The file reaper in AWS: a function on the table's stream that sees only the file records the
// TTL removed (an event filter: REMOVE, by DynamoDB's own principal, of a FILE# key) and deletes
// their objects, or puts back a record a running batch still pins (shared/batch/file-expiry.ts).
// It may delete objects under files/ and read batches and write files in the table, nothing more.
import { Duration } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as lambdaEventSources from 'aws-cdk-lib/aws-lambda-event-sources';
import { Construct } from 'constructs';
import { HANDLERS, TTL_PRINCIPAL } from '../../functions/contract.js';
import { ITEM_KEY_PREFIXES } from '../../shared/adapters/aws/dynamo-meta-store.js';
import { FUNCTION_ACCESS, grantAccess } from './access.js';
import { ServiceFunction } from './service-function.js';
import type { Storage } from './storage.js';

export interface FileReaperProps {
  readonly storage: Storage;
  readonly environment: Record<string, string>;
  readonly logRetentionDays: number;
}

/** The event source's filter: what DynamoDB's TTL removed, of file records only. */
export const REAPER_FILTER = {
  eventName: lambda.FilterRule.isEqual('REMOVE'),
  userIdentity: { type: lambda.FilterRule.isEqual('Service'), principalId: lambda.FilterRule.isEqual(TTL_PRINCIPAL) },
  dynamodb: { Keys: { pk: { S: lambda.FilterRule.beginsWith(ITEM_KEY_PREFIXES.file) } } },
};

export class FileReaper extends Construct {
  readonly reaper: ServiceFunction;

  constructor(scope: Construct, id: string, props: FileReaperProps) {
    super(scope, id);
    this.reaper = new ServiceFunction(this, 'Fn', {
      entry: HANDLERS.fileReaper,
      description: "File reaper: delete an expired file's object when the TTL removes its record",
      environment: props.environment,
      logRetentionDays: props.logRetentionDays,
      memorySize: 256,
      timeout: Duration.seconds(60),
    });
    grantAccess(this.reaper.function, props.storage, FUNCTION_ACCESS.fileReaper);
    this.reaper.function.addEventSource(
      new lambdaEventSources.DynamoEventSource(props.storage.table, {
        startingPosition: lambda.StartingPosition.TRIM_HORIZON,
        batchSize: 100,
        filters: [lambda.FilterCriteria.filter(REAPER_FILTER)],
        reportBatchItemFailures: true,
        // A record that keeps failing is retried until it ages out of the stream (24 h); the
        // S3 lifecycle rule on files/ still removes its object in the end.
        retryAttempts: -1,
      }),
    );
  }
}
