// One Lambda handler of functions/, bundled by esbuild through NodejsFunction, with the settings
// every handler shares: Node.js 24 on arm64, ESM, its own log group, and a role that can write
// only to that log group (no AWS managed policy). Each construct that owns a handler grants it
// exactly what it calls.

import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';

/** The repository root: entries in functions/contract.ts are relative to it. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * Node.js 24: nodejs22.x is deprecated on 2027-04-30 and takes no new functions from 2027-06-01.
 * The suite runs on Node 24 as well as 20 and 22 (.ci/run); bundling targets the same line.
 */
export const RUNTIME = lambda.Runtime.NODEJS_24_X;
export const ESBUILD_TARGET = 'node24';

export interface ServiceFunctionProps {
  /** Entry file, relative to the repository root (functions/contract.ts HANDLERS). */
  readonly entry: string;
  readonly description: string;
  readonly memorySize: number;
  readonly timeout: Duration;
  readonly environment: Record<string, string>;
  readonly logRetentionDays: number;
  /** Concurrency reserved for (and capping) this function; unset: it shares the account's pool. */
  readonly reservedConcurrentExecutions?: number;
}

export class ServiceFunction extends Construct {
  readonly function: NodejsFunction;
  readonly role: iam.Role;
  readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: ServiceFunctionProps) {
    super(scope, id);
    this.logGroup = new logs.LogGroup(this, 'Logs', {
      retention: props.logRetentionDays as logs.RetentionDays,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `${props.description} (writes only to its own log group)`,
    });
    this.logGroup.grantWrite(this.role);

    this.function = new NodejsFunction(this, 'Function', {
      entry: path.join(REPO_ROOT, props.entry),
      handler: 'handler',
      description: props.description,
      runtime: RUNTIME,
      architecture: lambda.Architecture.ARM_64,
      memorySize: props.memorySize,
      timeout: props.timeout,
      reservedConcurrentExecutions: props.reservedConcurrentExecutions,
      role: this.role,
      logGroup: this.logGroup,
      environment: {
        ...props.environment,
        // Stack traces through the bundle's source map.
        NODE_OPTIONS: '--enable-source-maps',
      },
      projectRoot: REPO_ROOT,
      depsLockFilePath: path.join(REPO_ROOT, 'package-lock.json'),
      bundling: {
        format: OutputFormat.ESM,
        target: ESBUILD_TARGET,
        minify: true,
        sourceMap: true,
        sourcesContent: false,
        mainFields: ['module', 'main'],
        // The AWS SDK is bundled, not taken from the runtime: the version in package-lock.json is
        // the one the adapters are tested with (the S3 checksum options, for one).
        externalModules: [],
        // ESM output still meets CommonJS dependencies that call require(): give them one.
        banner:
          "import { createRequire as __batchCreateRequire } from 'node:module'; const require = __batchCreateRequire(import.meta.url);",
      },
    });
  }
}
