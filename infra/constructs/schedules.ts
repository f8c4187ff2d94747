// Batches submitted on a schedule (EventBridge Scheduler): each schedule invokes the small
// scheduled-submit function with the body of a POST /v1/batches and the project it is for; the
// function creates the batch through the API's own route.
import { Duration, Stack, TimeZone } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as targets from 'aws-cdk-lib/aws-scheduler-targets';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { ENV } from '../../functions/contract.js';
import type { ScheduledSubmitEvent } from '../../functions/scheduled-submit.js';
import { DEFAULTS, type ScheduledSubmission } from '../config.js';
import { FUNCTION_ACCESS, grantAccess } from './access.js';
import { ServiceFunction } from './service-function.js';
import type { Storage } from './storage.js';

export const SCHEDULED_SUBMIT_ENTRY = 'functions/scheduled-submit.ts';

export interface SchedulesProps {
  readonly storage: Storage;
  readonly stateMachine: sfn.IStateMachine;
  readonly environment: Record<string, string>;
  readonly logRetentionDays: number;
  readonly schedules: readonly ScheduledSubmission[];
}

export class Schedules extends Construct {
  readonly submitter: ServiceFunction;
  readonly schedules: scheduler.Schedule[] = [];

  constructor(scope: Construct, id: string, props: SchedulesProps) {
    super(scope, id);
    this.submitter = new ServiceFunction(this, 'Submit', {
      entry: SCHEDULED_SUBMIT_ENTRY,
      description: 'Scheduled submission: create a batch from an uploaded file',
      environment: { ...props.environment, [ENV.stateMachineArn]: props.stateMachine.stateMachineArn },
      logRetentionDays: props.logRetentionDays,
      memorySize: 256,
      timeout: Duration.seconds(30),
    });
    // Reads the input file's record, writes the batch; starts its execution. No S3 access.
    grantAccess(this.submitter.function, props.storage, FUNCTION_ACCESS.scheduledSubmit);
    props.stateMachine.grantStartExecution(this.submitter.function);
    // Scheduler invokes asynchronously; a retry after a batch was created would create a second
    // one, so a failed submission is not retried: it shows in the function's Errors.
    this.submitter.function.configureAsyncInvoke({ retryAttempts: 0, maxEventAge: Duration.hours(1) });

    // One role for every schedule, here rather than CDK's stack-level singleton: it can invoke
    // only the submit function, and only for schedules of this account.
    const role = new iam.Role(this, 'SchedulerRole', {
      assumedBy: new iam.ServicePrincipal('scheduler.amazonaws.com', {
        conditions: { StringEquals: { 'aws:SourceAccount': Stack.of(this).account } },
      }),
      description: 'EventBridge Scheduler: invoke the scheduled-submit function',
    });

    for (const submission of props.schedules) {
      const input: ScheduledSubmitEvent = {
        schedule: submission.name,
        project: submission.project,
        input_file_id: submission.inputFileId,
        endpoint: submission.endpoint,
        completion_window: submission.completionWindow ?? DEFAULTS.completionWindow,
        metadata: submission.metadata ?? null,
      };
      this.schedules.push(
        new scheduler.Schedule(this, `Schedule-${submission.name}`, {
          description: `Submit a batch of ${submission.inputFileId} for ${submission.project}`,
          schedule: scheduler.ScheduleExpression.expression(
            submission.scheduleExpression,
            submission.timeZone ? TimeZone.of(submission.timeZone) : undefined,
          ),
          target: new targets.LambdaInvoke(this.submitter.function, {
            input: scheduler.ScheduleTargetInput.fromObject(input),
            role,
            retryAttempts: 0,
          }),
        }),
      );
    }
  }
}
