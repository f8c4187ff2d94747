// The OpenAI-compatible HTTP surface in AWS: an API Gateway HTTP API whose `$default` route
// proxies every request to one Lambda that hosts the same routes as the local server
// (shared/api/app.ts). HTTP API rather than REST API: a third of the price ($1.00 vs $3.50 per
// million requests), lower latency, and the 2.0 payload; REST's extras (usage plans, API keys,
// request validation) are not needed because the app checks its own keys and validates bodies.
// Both cap a request at 10 MB, but the Lambda's 6 MB applies first: larger files go through the
// Uploads API.
import { Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import { AccessLogFormat } from 'aws-cdk-lib/aws-apigateway';
import * as apigwv2 from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { API_ROUTE_DEADLINE, API_TIMEOUT_SECONDS, ENV, HANDLERS } from '../../functions/contract.js';
import { FUNCTION_ACCESS, grantAccess } from './access.js';
import { ServiceFunction } from './service-function.js';
import type { Storage } from './storage.js';

export interface ApiProps {
  readonly storage: Storage;
  readonly stateMachine: sfn.IStateMachine;
  readonly environment: Record<string, string>;
  readonly logRetentionDays: number;
  /** The stage's default route throttle; null: none beyond the account's. */
  readonly throttle: { readonly rateLimit: number; readonly burstLimit: number } | null;
  /** The API function's reserved concurrency; null: none. */
  readonly reservedConcurrency: number | null;
}

export class Api extends Construct {
  readonly handler: ServiceFunction;
  readonly httpApi: apigwv2.HttpApi;
  readonly stage: apigwv2.HttpStage;
  /** The base URL for the OpenAI SDK: https://<id>.execute-api.<region>.amazonaws.com/v1 */
  readonly baseUrl: string;

  constructor(scope: Construct, id: string, props: ApiProps) {
    super(scope, id);
    this.handler = new ServiceFunction(this, 'Handler', {
      entry: HANDLERS.api,
      description: 'OpenAI-compatible Batch API: files, uploads, batches',
      environment: {
        ...props.environment,
        [ENV.stateMachineArn]: props.stateMachine.stateMachineArn,
        // API Gateway gives up on an integration after 30 s: every route answers before, in the
        // OpenAI envelope, and a complete's join that goes on is handed to an invocation of its own.
        API_ROUTE_DEADLINE,
      },
      logRetentionDays: props.logRetentionDays,
      memorySize: 512,
      // A handed-over complete of a large upload has this long for its join (functions/contract.ts).
      timeout: Duration.seconds(API_TIMEOUT_SECONDS),
      // Its share of the account's concurrency, and its cap: a flood at the API leaves the workers theirs.
      ...(props.reservedConcurrency !== null && { reservedConcurrentExecutions: props.reservedConcurrency }),
    });
    grantAccess(this.handler.function, props.storage, FUNCTION_ACCESS.api);
    props.stateMachine.grantStartExecution(this.handler.function); // create a batch
    props.stateMachine.grantTaskResponse(this.handler.function); // cancel: SendTaskFailure(BatchCancelled)
    // A complete whose join outlives the deadline hands it to an asynchronous invocation of this
    // function. In a policy of its own: in the role's default policy the function's ARN would make
    // the function depend on itself.
    new iam.Policy(this, 'InvokeSelf', {
      roles: [this.handler.role],
      statements: [new iam.PolicyStatement({ actions: ['lambda:InvokeFunction'], resources: [this.handler.function.functionArn] })],
    });

    this.httpApi = new apigwv2.HttpApi(this, 'HttpApi', {
      description: 'OpenAI-compatible Batch API',
      defaultIntegration: new HttpLambdaIntegration('Lambda', this.handler.function, {
        payloadFormatVersion: apigwv2.PayloadFormatVersion.VERSION_2_0,
      }),
      // The stage is declared below, with access logs.
      createDefaultStage: false,
    });
    Validations.of(this.httpApi).acknowledge({
      id: 'AwsSolutions-APIG4',
      reason:
        "The OpenAI wire contract authenticates with 'Authorization: Bearer <key>'; the app checks the key's SHA-256 against the table (shared/api/api-keys.ts) and answers 401 in OpenAI's error envelope. An API Gateway authorizer would add a Lambda invocation per request and answer in another format.",
    });
    const accessLogs = new logs.LogGroup(this, 'AccessLogs', {
      retention: props.logRetentionDays as logs.RetentionDays,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.stage = new apigwv2.HttpStage(this, 'DefaultStage', {
      httpApi: this.httpApi,
      stageName: '$default',
      autoDeploy: true,
      accessLogSettings: {
        destination: new apigwv2.LogGroupLogDestination(accessLogs),
        // JSON, one object a line, like the handlers' logs. No headers, no bodies.
        format: AccessLogFormat.custom(
          JSON.stringify({
            requestId: '$context.requestId',
            time: '$context.requestTime',
            method: '$context.httpMethod',
            path: '$context.path',
            status: '$context.status',
            responseLength: '$context.responseLength',
            latencyMs: '$context.responseLatency',
            integrationLatencyMs: '$context.integrationLatency',
            integrationError: '$context.integrationErrorMessage',
            sourceIp: '$context.identity.sourceIp',
          }),
        ),
      },
      // Past it API Gateway answers 429 itself, without invoking (or paying for) the function.
      ...(props.throttle ? { throttle: props.throttle } : {}),
    });
    this.baseUrl = `${this.stage.url}v1`;
  }
}
