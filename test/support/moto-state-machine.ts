// The synthesized state machine, executed by moto's Step Functions (execute_state_machine), with
// its Lambda tasks replaced by stand-ins the test controls. moto cannot run a Lambda function
// without Docker, so each Lambda task becomes an SQS task with a task token
// (`arn:aws:states:::sqs:sendMessage.waitForTaskToken`): the task's payload goes to a queue, the
// harness hands it to the test's stand-in for that function, and answers the token with the
// stand-in's result (SendTaskSuccess) or its error (SendTaskFailure, named as Lambda names a
// function's error). A `.waitForTaskToken` Lambda task already carries its token in its payload:
// its stand-in gets it, and the test (or the adapters) answer it as the workers and the cancel API
// would. Everything else in the definition (Choice, Retry, Catch, timeouts, paths) runs as
// synthesized.

import {
  CreateStateMachineCommand,
  DescribeExecutionCommand,
  type ExecutionStatus,
  GetExecutionHistoryCommand,
  type HistoryEvent,
  SendTaskFailureCommand,
  SendTaskSuccessCommand,
  type SFNClient,
} from '@aws-sdk/client-sfn';
import { CreateQueueCommand, DeleteMessageCommand, ReceiveMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { Stack } from 'aws-cdk-lib';
import type { Template } from 'aws-cdk-lib/assertions';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type { BatchServiceStack } from '../../infra/batch-service-stack.js';
import { ServiceFunction } from '../../infra/constructs/service-function.js';
import { resolveIntrinsics } from '../infra/support.js';
import { MOTO_ACCOUNT } from './moto.js';

/** What a stand-in is given: the task's payload, the state that invoked it, how many times it was invoked for that state. */
export interface Invocation {
  fn: string;
  state: string;
  input: Record<string, unknown>;
  attempt: number;
}

/** A function's failure, as Lambda reports it to Step Functions (the error name is the error's type). */
export class StepFailure extends Error {
  constructor(
    readonly error: string,
    override readonly cause = 'failed in the stand-in',
  ) {
    super(`${error}: ${cause}`);
  }
}

/** A stand-in for one function: its result (for a synchronous task), or a thrown StepFailure. */
export type StandIn = (invocation: Invocation) => unknown | Promise<unknown>;

interface TaskMessage {
  fn: string;
  state: string;
  callback: boolean;
  wrapPayload: boolean;
  taskToken: string;
  input: Record<string, unknown>;
}

/** The construct id of each ServiceFunction (ValidateFn, EnqueueFn, ...) by its logical id in the template. */
export function functionNames(stack: BatchServiceStack): Map<string, string> {
  const names = new Map<string, string>();
  for (const node of stack.node.findAll()) {
    if (!(node instanceof ServiceFunction)) continue;
    const cfn = node.function.node.defaultChild as lambda.CfnFunction;
    names.set(Stack.of(node).resolve(cfn.logicalId) as string, node.node.id);
  }
  return names;
}

const FUNCTION_ARN = /^arn:aws:lambda:[^:]+:\d+:function:([A-Za-z0-9]+)$/;

/**
 * The definition with every Lambda task turned into an SQS task with a token (see the top of this
 * file). `fastRetries`: retriers wait 1 s between attempts instead of their backoff (the same
 * errors, the same number of attempts), so a step that fails for good is seen in seconds.
 */
export function standInDefinition(
  definition: { States: Record<string, Record<string, any>> },
  names: Map<string, string>,
  queueUrl: string,
  options: { fastRetries?: boolean } = {},
): unknown {
  const nameOf = (arn: string) => {
    const logicalId = FUNCTION_ARN.exec(arn)?.[1];
    const name = logicalId && names.get(logicalId);
    if (!name) throw new Error(`no stand-in name for the function ${arn}`);
    return name;
  };
  const states: Record<string, unknown> = {};
  for (const [stateName, state] of Object.entries(definition.States)) {
    const next: Record<string, any> = { ...state };
    if (options.fastRetries && Array.isArray(state.Retry)) {
      next.Retry = state.Retry.map((retrier: Record<string, unknown>) => ({
        ...retrier,
        IntervalSeconds: 1,
        BackoffRate: 1,
        JitterStrategy: 'NONE',
      }));
    }
    if (state.Type === 'Task' && typeof state.Resource === 'string') {
      const resource = state.Resource as string;
      let message: Record<string, unknown> | undefined;
      if (FUNCTION_ARN.test(resource)) {
        // A Lambda function as the resource: the task's result is the function's payload.
        message = { fn: nameOf(resource), callback: false, wrapPayload: false, input: state.Parameters ?? { 'input.$': '$' } };
      } else if (resource === 'arn:aws:states:::lambda:invoke' || resource === 'arn:aws:states:::lambda:invoke.waitForTaskToken') {
        const parameters = state.Parameters as Record<string, unknown>;
        const payload = 'Payload.$' in parameters ? { 'input.$': parameters['Payload.$'] } : { input: parameters.Payload ?? {} };
        message = {
          fn: nameOf(String(parameters.FunctionName)),
          callback: resource.endsWith('.waitForTaskToken'),
          // lambda:invoke's result is the invocation's response; the function's answer is its Payload.
          wrapPayload: resource === 'arn:aws:states:::lambda:invoke',
          ...payload,
        };
      }
      if (message) {
        next.Resource = 'arn:aws:states:::sqs:sendMessage.waitForTaskToken';
        next.Parameters = {
          QueueUrl: queueUrl,
          MessageBody: { ...message, state: stateName, 'taskToken.$': '$$.Task.Token' },
        };
      }
    }
    states[stateName] = next;
  }
  return { ...definition, States: states };
}

export interface ExecutionSummary {
  status: ExecutionStatus | undefined;
  /** The states entered, in order. */
  path: string[];
  events: HistoryEvent[];
}

export class MotoStateMachine {
  readonly invocations: Invocation[] = [];
  private readonly standIns = new Map<string, StandIn>();
  private polling = true;
  private readonly loop: Promise<void>;
  private failure: unknown;

  private constructor(
    private readonly sfn: SFNClient,
    private readonly sqs: SQSClient,
    private readonly queueUrl: string,
    readonly stateMachineArn: string,
  ) {
    this.loop = this.poll();
  }

  /** Creates the stand-ins' queue and the state machine from the synthesized template. */
  static async create(
    clients: { sfn: SFNClient; sqs: SQSClient },
    synthesized: { template: Template; stack: BatchServiceStack },
    options: { fastRetries?: boolean; name?: string } = {},
  ): Promise<MotoStateMachine> {
    const name = options.name ?? `batches-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
    const { QueueUrl } = await clients.sqs.send(new CreateQueueCommand({ QueueName: `${name}-tasks` }));
    const machine = Object.values(synthesized.template.findResources('AWS::StepFunctions::StateMachine'))[0]!;
    const definition = JSON.parse(resolveIntrinsics(machine.Properties.DefinitionString));
    const { stateMachineArn } = await clients.sfn.send(
      new CreateStateMachineCommand({
        name,
        type: machine.Properties.StateMachineType,
        roleArn: `arn:aws:iam::${MOTO_ACCOUNT}:role/state-machine`,
        definition: JSON.stringify(standInDefinition(definition, functionNames(synthesized.stack), QueueUrl!, options)),
      }),
    );
    return new MotoStateMachine(clients.sfn, clients.sqs, QueueUrl!, stateMachineArn!);
  }

  /** What the function `fn` (a ServiceFunction's id: ValidateFn, EnqueueFn, ...) does from now on. */
  on(fn: string, standIn: StandIn): this {
    this.standIns.set(fn, standIn);
    return this;
  }

  executionArn(name: string): string {
    return `${this.stateMachineArn.replace(':stateMachine:', ':execution:')}:${name}`;
  }

  async describe(name: string): Promise<ExecutionSummary> {
    const executionArn = this.executionArn(name);
    const { status } = await this.sfn.send(new DescribeExecutionCommand({ executionArn }));
    const events: HistoryEvent[] = [];
    let nextToken: string | undefined;
    do {
      const page = await this.sfn.send(new GetExecutionHistoryCommand({ executionArn, nextToken }));
      events.push(...(page.events ?? []));
      nextToken = page.nextToken;
    } while (nextToken);
    const path = events.filter((e) => e.type?.endsWith('StateEntered')).map((e) => e.stateEnteredEventDetails?.name ?? '?');
    return { status, path, events };
  }

  /** Waits until the execution is no longer running. */
  async finished(name: string, timeoutMs = 60_000): Promise<ExecutionSummary> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.failure) throw this.failure;
      const summary = await this.describe(name);
      if (summary.status !== 'RUNNING') return summary;
      if (Date.now() > deadline) throw new Error(`execution ${name} still running after ${timeoutMs} ms: ${summary.path.join(' → ')}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }

  /** Waits until `fn` was invoked `count` times in all; returns its invocations. */
  async invoked(fn: string, count = 1, timeoutMs = 30_000): Promise<Invocation[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.failure) throw this.failure;
      const found = this.invocations.filter((i) => i.fn === fn);
      if (found.length >= count) return found;
      if (Date.now() > deadline) throw new Error(`${fn} invoked ${found.length} times, not ${count}, after ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  async close(): Promise<void> {
    this.polling = false;
    await this.loop;
  }

  private async poll(): Promise<void> {
    while (this.polling) {
      try {
        const { Messages = [] } = await this.sqs.send(
          new ReceiveMessageCommand({ QueueUrl: this.queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 1 }),
        );
        for (const message of Messages) {
          await this.sqs.send(new DeleteMessageCommand({ QueueUrl: this.queueUrl, ReceiptHandle: message.ReceiptHandle }));
          void this.run(JSON.parse(message.Body!) as TaskMessage);
        }
      } catch (error) {
        if (this.polling) this.failure ??= error;
        return;
      }
    }
  }

  private async run(task: TaskMessage): Promise<void> {
    const attempt = this.invocations.filter((i) => i.fn === task.fn && i.state === task.state).length + 1;
    const invocation: Invocation = { fn: task.fn, state: task.state, input: task.input, attempt };
    this.invocations.push(invocation);
    const standIn = this.standIns.get(task.fn);
    try {
      if (!standIn) throw new StepFailure('Error', `no stand-in for ${task.fn}`);
      const result = await standIn(invocation);
      // A callback task's function only stores its token: someone else answers it later.
      if (task.callback) return;
      const output = task.wrapPayload ? { Payload: result, StatusCode: 200 } : result;
      await this.sfn.send(new SendTaskSuccessCommand({ taskToken: task.taskToken, output: JSON.stringify(output ?? null) }));
    } catch (error) {
      const { name, cause } =
        error instanceof StepFailure
          ? { name: error.error, cause: error.cause }
          : { name: 'Error', cause: String((error as Error).message) };
      try {
        await this.sfn.send(new SendTaskFailureCommand({ taskToken: task.taskToken, error: name, cause }));
      } catch (signal) {
        this.failure ??= signal;
      }
    }
  }
}
