// The start sweep in AWS: a small function an EventBridge schedule runs every 5 minutes, which
// starts again (or, after START_SWEEP_GIVE_UP_AFTER, fails) the batches left `validating` without a
// Step Functions execution (shared/batch/start-sweep.ts). It may start and describe executions of
// the state machine, and touch only what failing a batch touches.
import { Duration } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as eventTargets from 'aws-cdk-lib/aws-events-targets';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { ENV, HANDLERS } from '../../functions/contract.js';
import { FUNCTION_ACCESS, grantAccess } from './access.js';
import { ServiceFunction } from './service-function.js';
import type { Storage } from './storage.js';

export interface StartSweepProps {
  readonly storage: Storage;
  readonly stateMachine: sfn.StateMachine;
  readonly environment: Record<string, string>;
  readonly logRetentionDays: number;
}

export const START_SWEEP_RATE = Duration.minutes(5);

export class StartSweep extends Construct {
  readonly sweeper: ServiceFunction;
  readonly schedule: events.Rule;

  constructor(scope: Construct, id: string, props: StartSweepProps) {
    super(scope, id);
    this.sweeper = new ServiceFunction(this, 'Fn', {
      entry: HANDLERS.startSweep,
      description: 'Start sweep: start again, or fail, batches left validating without an execution',
      environment: { ...props.environment, [ENV.stateMachineArn]: props.stateMachine.stateMachineArn },
      logRetentionDays: props.logRetentionDays,
      memorySize: 256,
      // Two sweeps that overlap are harmless: starts are idempotent, the fail is a compare-and-set.
      timeout: Duration.seconds(120),
    });
    grantAccess(this.sweeper.function, props.storage, FUNCTION_ACCESS.startSweep);
    props.stateMachine.grantStartExecution(this.sweeper.function);
    props.stateMachine.grantExecution(this.sweeper.function, 'states:DescribeExecution');
    this.schedule = new events.Rule(this, 'Schedule', {
      description: 'Start again, or fail, batches left validating without an execution',
      schedule: events.Schedule.rate(START_SWEEP_RATE),
      targets: [new eventTargets.LambdaFunction(this.sweeper.function, { retryAttempts: 0 })],
    });
  }
}
