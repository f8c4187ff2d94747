// A batch's lifecycle as a Step Functions Standard state machine (DESIGN.md, "The lifecycle"):
//
//   Validate ─▶ AfterValidate ─in_progress─▶ Enqueue ─▶ WaitForChunks ─▶ Finalize
//                    │ failed ─▶ ValidationFailed (Succeed: the batch itself records `failed`)
//                    └ cancelling, or anything else ─▶ Finalize
//   WaitForChunks: .waitForTaskToken, timeout = what is left of the window ($.waitSeconds).
//     the last worker's chunk sends task success ─▶ Finalize (completed)
//     States.Timeout (the window passed)         ─▶ Finalize (expired)
//     BatchCancelled (SendTaskFailure by cancel) ─▶ DrainAfterCancel
//     anything else that is left after retries   ─▶ FailBatch (see below)
//   DrainAfterCancel: .waitForTaskToken again, timeout = the drain time ($.drainSeconds), while
//     the workers start no new request and finish those in flight (their answers are kept).
//     the last worker's chunk sends task success ─▶ Finalize (cancelled)
//     States.Timeout (the drain time passed)     ─▶ Finalize (cancelled)
//     anything else that is left after retries   ─▶ Finalize (cancelled)
//   Every Task has a Catch: a step whose retries are spent goes to FailBatch, which ends the batch
//   `failed` with the reason (finalizing it first when chunks may have run, so their answers are
//   kept), then to the Fail state BatchFailed (the failed-executions alarm tells the operator).
//     Validate, Enqueue, WaitForChunks (not its timeout or the cancel), Finalize ─▶ FailBatch
//     FailBatch itself failing after retries ─▶ FailBatchFailed (Fail; the batch is left as it was)
//
// Cost: the happy path is 5 billed state transitions (Validate, AfterValidate, Enqueue,
// WaitForChunks, Finalize) whatever the batch's size; a cancel adds 1 (DrainAfterCancel); a
// failed validation is 3; each retry adds one; a step that fails for good adds 2 (FailBatch,
// BatchFailed). There is no Map state and no polling loop: requests are never states, chunks are
// SQS messages.
import { Duration, Names, RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Construct } from 'constructs';
import { CANCEL_ERROR, HANDLERS } from '../../functions/contract.js';
import { FUNCTION_ACCESS, grantAccess } from './access.js';
import { ServiceFunction } from './service-function.js';
import type { Storage } from './storage.js';
import type { Workers } from './workers.js';

export interface LifecycleProps {
  readonly storage: Storage;
  readonly workers: Workers;
  readonly environment: Record<string, string>;
  readonly logRetentionDays: number;
}

/** Errors worth retrying on every Lambda task: Lambda's own, throttles, and the function's (all steps are idempotent). */
export const RETRIED_ERRORS = [
  'Lambda.ServiceException',
  'Lambda.AWSLambdaException',
  'Lambda.SdkClientException',
  'Lambda.ClientExecutionTimeoutException',
  'Lambda.TooManyRequestsException',
  'States.TaskFailed',
] as const;
export const RETRY = { interval: Duration.seconds(2), backoffRate: 2, maxAttempts: 6 } as const;
/** Log groups Step Functions delivers to without a CloudWatch Logs resource policy of their own. */
export const VENDED_LOGS_PREFIX = '/aws/vendedlogs/states/';

export class Lifecycle extends Construct {
  readonly stateMachine: sfn.StateMachine;
  readonly validate: ServiceFunction;
  readonly enqueue: ServiceFunction;
  readonly waitForChunks: ServiceFunction;
  readonly finalize: ServiceFunction;
  readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: LifecycleProps) {
    super(scope, id);
    const common = { environment: props.environment, logRetentionDays: props.logRetentionDays };

    // Validation streams the whole input file once; planning and finalization stream too, but a
    // 200 MB file at Lambda's network speed wants the full 15 minutes in the worst case.
    this.validate = new ServiceFunction(this, 'ValidateFn', {
      ...common,
      entry: HANDLERS.validate,
      description: 'Batch lifecycle: validate the input file and plan its chunks',
      memorySize: 1024,
      timeout: Duration.minutes(15),
    });
    this.enqueue = new ServiceFunction(this, 'EnqueueFn', {
      ...common,
      entry: HANDLERS.enqueue,
      description: 'Batch lifecycle: send a queue message per chunk',
      memorySize: 1024,
      timeout: Duration.minutes(15),
    });
    // It answers its own token when the chunks finished, or a cancel came, before it stored it: a
    // task token is all SendTaskSuccess and SendTaskFailure need, so it is not told the ARN of the
    // state machine that invokes it (which would be a CloudFormation cycle).
    this.waitForChunks = new ServiceFunction(this, 'WaitForChunksFn', {
      ...common,
      entry: HANDLERS.waitForChunks,
      description: "Batch lifecycle: store the execution's task token on the batch",
      memorySize: 256,
      timeout: Duration.seconds(30),
    });
    this.finalize = new ServiceFunction(this, 'FinalizeFn', {
      ...common,
      entry: HANDLERS.finalize,
      description: 'Batch lifecycle: merge chunk results into the output and error files',
      memorySize: 1024,
      timeout: Duration.minutes(15),
    });

    grantAccess(this.validate.function, props.storage, FUNCTION_ACCESS.validate);
    grantAccess(this.enqueue.function, props.storage, FUNCTION_ACCESS.enqueue);
    props.workers.queue.grantSendMessages(this.enqueue.function);
    grantAccess(this.waitForChunks.function, props.storage, FUNCTION_ACCESS.waitForChunks);
    grantAccess(this.finalize.function, props.storage, FUNCTION_ACCESS.finalize);
    // A batch's end admits the batches of its project that waited for its quota: their chunks go on the queue.
    props.workers.queue.grantSendMessages(this.finalize.function);

    const batchIdOnly = sfn.TaskInput.fromObject({ batchId: sfn.JsonPath.stringAt('$.batchId') });
    const step = (stepId: string, fn: ServiceFunction) =>
      new tasks.LambdaInvoke(this, stepId, {
        lambdaFunction: fn.function,
        payload: batchIdOnly,
        payloadResponseOnly: true,
        retryOnServiceExceptions: false,
      }).addRetry({ errors: [...RETRIED_ERRORS], ...RETRY, jitterStrategy: sfn.JitterType.FULL });

    const validate = step('Validate', this.validate); // → { batchId, status }
    const enqueue = step('Enqueue', this.enqueue); // → { batchId, waitSeconds, drainSeconds }
    const finalize = step('Finalize', this.finalize);

    // The finalize function told which step failed for good ($.failure, the Catch's error output):
    // it ends the batch failed with that reason (functions/finalize.ts, failBatchStep).
    const failBatch = new tasks.LambdaInvoke(this, 'FailBatch', {
      lambdaFunction: this.finalize.function,
      payload: sfn.TaskInput.fromObject({ batchId: sfn.JsonPath.stringAt('$.batchId'), failure: sfn.JsonPath.objectAt('$.failure') }),
      payloadResponseOnly: true,
      retryOnServiceExceptions: false,
    })
      .addRetry({ errors: [...RETRIED_ERRORS], ...RETRY, jitterStrategy: sfn.JitterType.FULL })
      .addCatch(
        new sfn.Fail(this, 'FailBatchFailed', {
          error: 'BatchNotEnded',
          cause: 'A lifecycle step failed after its retries, and so did ending the batch failed: the batch is left in its status.',
        }),
        { errors: [sfn.Errors.ALL], resultPath: '$.failBatchError' },
      )
      .next(
        new sfn.Fail(this, 'BatchFailed', {
          error: 'BatchStepFailed',
          cause: 'A lifecycle step failed after its retries; the batch ended failed (see its errors).',
        }),
      );
    const failsTheBatch = { errors: [sfn.Errors.ALL], resultPath: '$.failure' };
    validate.addCatch(failBatch, failsTheBatch);
    finalize.addCatch(failBatch, failsTheBatch);

    // The wait-for-chunks function under .waitForTaskToken, until the task token is answered or
    // the timeout Enqueue computed runs out.
    const waitForTaskToken = (stateId: string, timeoutPath: string, draining: boolean) =>
      new tasks.LambdaInvoke(this, stateId, {
        lambdaFunction: this.waitForChunks.function,
        integrationPattern: sfn.IntegrationPattern.WAIT_FOR_TASK_TOKEN,
        payload: sfn.TaskInput.fromObject({
          batchId: sfn.JsonPath.stringAt('$.batchId'),
          taskToken: sfn.JsonPath.taskToken,
          ...(draining && { draining: true }),
        }),
        taskTimeout: sfn.Timeout.at(timeoutPath),
        resultPath: sfn.JsonPath.DISCARD,
        retryOnServiceExceptions: false,
      })
        // Retriers are tried in order and the first whose errors match decides. States.TaskFailed
        // matches every error but States.Timeout, the cancel included: without this first retrier a
        // cancel would be "retried" six times (a minute of backoff) before it is caught.
        .addRetry({ errors: [CANCEL_ERROR], maxAttempts: 0 })
        .addRetry({ errors: [...RETRIED_ERRORS], ...RETRY, jitterStrategy: sfn.JitterType.FULL })
        .addCatch(finalize, { errors: [sfn.Errors.TIMEOUT], resultPath: '$.error' });

    // WaitForChunks' catch keeps its input (resultPath '$.error'): Enqueue's $.drainSeconds reaches this state.
    const drainAfterCancel = waitForTaskToken('DrainAfterCancel', '$.drainSeconds', true).addCatch(finalize, {
      errors: [sfn.Errors.ALL],
      resultPath: '$.error',
    });
    // Enqueue computed $.waitSeconds: the window left plus time for chunks in flight to drain.
    const waitForChunks = waitForTaskToken('WaitForChunks', '$.waitSeconds', false)
      .addCatch(drainAfterCancel, { errors: [CANCEL_ERROR], resultPath: '$.error' })
      .addCatch(failBatch, failsTheBatch);
    drainAfterCancel.next(finalize);

    // A batch whose chunks could not all be enqueued ends failed rather than stay in_progress for
    // ever: the chunks that did run keep their answers, every other line is in the error file.
    enqueue.addCatch(failBatch, failsTheBatch);

    const definition = validate.next(
      new sfn.Choice(this, 'AfterValidate')
        .when(sfn.Condition.stringEquals('$.status', 'in_progress'), enqueue.next(waitForChunks.next(finalize)))
        .when(sfn.Condition.stringEquals('$.status', 'failed'), new sfn.Succeed(this, 'ValidationFailed'))
        .when(sfn.Condition.stringEquals('$.status', 'cancelling'), finalize)
        // completed, expired, cancelled: a rerun of a finished batch; Finalize is a no-op for them.
        .otherwise(finalize),
    );

    // Under /aws/vendedlogs/: CloudWatch Logs then needs no resource-policy entry per log group for
    // Step Functions' log delivery (that policy is capped at 5,120 characters per account and region).
    this.logGroup = new logs.LogGroup(this, 'Logs', {
      logGroupName: `${VENDED_LOGS_PREFIX}${Names.uniqueResourceName(this, { maxLength: 400, separator: '-', allowedSpecialCharacters: '-_' })}`,
      retention: props.logRetentionDays as logs.RetentionDays,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    // No stateMachineName: CloudFormation generates one, so a change that replaces the state
    // machine deploys (a named one could not be replaced), and executions already running go on.
    this.stateMachine = new sfn.StateMachine(this, 'StateMachine', {
      stateMachineType: sfn.StateMachineType.STANDARD,
      definitionBody: sfn.DefinitionBody.fromChainable(definition),
      comment: 'OpenAI-compatible batch: validate, enqueue chunks, wait for them (or the window, or a cancel), finalize',
      // Executions carry ids only; ERROR is enough to see why a step failed, and the execution
      // history keeps every event for 90 days.
      logs: { destination: this.logGroup, level: sfn.LogLevel.ERROR, includeExecutionData: false },
      tracingEnabled: true,
    });
    Validations.of(this.stateMachine).acknowledge({
      id: 'AwsSolutions-SF1',
      reason:
        'Logs at ERROR: ALL would write every state transition of every batch to CloudWatch Logs for nothing the execution history (kept 90 days) does not already show, at a cost per batch.',
    });

    // StateMachine.grantTaskResponse, in a policy of its own: in the role's default policy it would
    // make the function depend on the state machine, which depends on the function.
    new iam.Policy(this, 'WaitForChunksTaskResponse', {
      roles: [this.waitForChunks.role],
      statements: [
        new iam.PolicyStatement({
          actions: ['states:SendTaskSuccess', 'states:SendTaskFailure', 'states:SendTaskHeartbeat'],
          resources: [this.stateMachine.stateMachineArn],
        }),
      ],
    });
  }
}
