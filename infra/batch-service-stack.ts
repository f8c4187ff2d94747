// The deployable stack: BatchService alone, environment-agnostic (no account, no region, no
// lookups), so `cdk synth` runs offline with no credentials and one template deploys anywhere.
import { Stack, type StackProps } from 'aws-cdk-lib';
import type { Construct } from 'constructs';
import { BatchService, type BatchServiceConstructProps } from './batch-service.js';

export interface BatchServiceStackProps extends StackProps {
  readonly service?: BatchServiceConstructProps;
}

export class BatchServiceStack extends Stack {
  readonly service: BatchService;

  constructor(scope: Construct, id: string, props: BatchServiceStackProps = {}) {
    super(scope, id, {
      description: 'OpenAI-compatible Batch API: HTTP API, Step Functions lifecycle, SQS chunk workers, S3 and DynamoDB',
      ...props,
    });
    this.service = new BatchService(this, 'Service', props.service);
  }
}
