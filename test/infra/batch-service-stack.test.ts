// The CDK stack: every property the issue names, asserted on the synthesized template.
import { createRequire } from 'node:module';
import { App, Validations } from 'aws-cdk-lib';
import { Match, type Template } from 'aws-cdk-lib/assertions';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { AwsSolutionsChecks } from 'cdk-nag';
import { beforeAll, describe, expect, it } from 'vitest';
import { CANCEL_ERROR, ENV, HANDLERS } from '../../functions/contract.js';
import { BatchServiceStack } from '../../infra/batch-service-stack.js';
import { checkProps } from '../../infra/config.js';
import { MAX_RECEIVE_COUNT, VISIBILITY_TIMEOUT_FACTOR } from '../../infra/constructs/workers.js';
import { flattenReference } from '../../infra/nag.js';
import { BY_PROJECT_INDEX, metaTableDefinition, TTL_ATTRIBUTE } from '../../shared/adapters/aws/dynamo-meta-store.js';
import { FULL_PROPS, policyStatements, resolveIntrinsics, type Synthesized, synthesize } from './support.js';

const validateAsl = createRequire(import.meta.url)('asl-validator') as (
  definition: unknown,
  options?: { checkArn?: boolean; checkPaths?: boolean },
) => { isValid: boolean; errorsText: (separator?: string) => string };

let synthesized: Synthesized;
let template: Template;

beforeAll(() => {
  synthesized = synthesize();
  template = synthesized.template;
});

/** The functions of the service (CDK adds none of its own: no custom resources). */
function functions(): Record<string, { Properties: Record<string, any> }> {
  return template.findResources('AWS::Lambda::Function') as Record<string, { Properties: Record<string, any> }>;
}

function functionByDescription(prefix: string): { id: string; properties: Record<string, any> } {
  const found = Object.entries(functions()).filter(([, fn]) => String(fn.Properties.Description ?? '').startsWith(prefix));
  expect(found, `one function described as ${prefix}`).toHaveLength(1);
  return { id: found[0]![0], properties: found[0]![1].Properties };
}

function definition(): any {
  const machine = Object.values(template.findResources('AWS::StepFunctions::StateMachine'))[0]!;
  return JSON.parse(resolveIntrinsics(machine.Properties.DefinitionString));
}

describe('storage', () => {
  it('blocks all public access to the bucket, encrypts it, and refuses plain HTTP', () => {
    template.resourceCountIs('AWS::S3::Bucket', 1);
    template.hasResourceProperties('AWS::S3::Bucket', {
      PublicAccessBlockConfiguration: {
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      },
      BucketEncryption: { ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }] },
    });
    template.hasResourceProperties('AWS::S3::BucketPolicy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: 'Deny',
            Action: 's3:*',
            Principal: { AWS: '*' },
            Condition: { Bool: { 'aws:SecureTransport': 'false' } },
          }),
        ]),
      },
    });
  });

  it("lets a browser read a presigned download (the console's large files): GET only, from any origin", () => {
    template.hasResourceProperties('AWS::S3::Bucket', {
      CorsConfiguration: { CorsRules: [{ AllowedMethods: ['GET'], AllowedOrigins: ['*'], MaxAge: 3600 }] },
    });
  });

  it('expires temporary objects: incomplete multipart uploads, upload parts, batch scratch', () => {
    const rules = Object.values(template.findResources('AWS::S3::Bucket'))[0]!.Properties.LifecycleConfiguration.Rules as any[];
    expect(rules).toContainEqual(
      expect.objectContaining({ AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 }, Status: 'Enabled' }),
    );
    expect(rules).toContainEqual(expect.objectContaining({ Prefix: 'uploads/', ExpirationInDays: 2 }));
    // files/ is a backstop past the longest retention (30 days) and window (14 days): the reaper deletes first.
    expect(rules).toContainEqual(expect.objectContaining({ Prefix: 'files/', ExpirationInDays: 52 }));
    // Longest window (336h, 14 days) plus a week: never a running batch's plan.
    expect(rules).toContainEqual(expect.objectContaining({ Prefix: 'batches/', ExpirationInDays: 21 }));
  });

  it("deletes an expired file's object when the TTL removes its record: the reaper sees only those stream records", () => {
    template.hasResourceProperties('AWS::DynamoDB::Table', {
      StreamSpecification: { StreamViewType: Match.stringLikeRegexp('OLD_IMAGE|NEW_AND_OLD_IMAGES') },
      TimeToLiveSpecification: { AttributeName: TTL_ATTRIBUTE, Enabled: true },
    });
    const reaper = functionByDescription('File reaper:');
    const mapping = Object.values(template.findResources('AWS::Lambda::EventSourceMapping')).find(
      (m) => JSON.stringify(m.Properties.FunctionName) === JSON.stringify({ Ref: reaper.id }),
    )!;
    expect(mapping.Properties).toMatchObject({ StartingPosition: 'TRIM_HORIZON', FunctionResponseTypes: ['ReportBatchItemFailures'] });
    expect(JSON.parse(mapping.Properties.FilterCriteria.Filters[0].Pattern)).toEqual({
      eventName: ['REMOVE'],
      userIdentity: { type: ['Service'], principalId: ['dynamodb.amazonaws.com'] },
      dynamodb: { Keys: { pk: { S: [{ prefix: 'FILE#' }] } } },
    });
  });

  it('keeps the bucket and the table when the stack is destroyed', () => {
    template.hasResource('AWS::S3::Bucket', { DeletionPolicy: 'Retain', UpdateReplacePolicy: 'Retain' });
    template.hasResource('AWS::DynamoDB::Table', { DeletionPolicy: 'Retain', UpdateReplacePolicy: 'Retain' });
  });

  it('creates the table exactly as metaTableDefinition describes it, on demand, with PITR and TTL', () => {
    const expected = metaTableDefinition('x');
    template.resourceCountIs('AWS::DynamoDB::Table', 1);
    const table = Object.values(template.findResources('AWS::DynamoDB::Table'))[0]!.Properties;
    expect(table.BillingMode).toBe('PAY_PER_REQUEST');
    expect(table.KeySchema).toEqual(expected.KeySchema);
    expect(new Set(table.AttributeDefinitions.map(JSON.stringify))).toEqual(
      new Set(expected.AttributeDefinitions!.map((a) => JSON.stringify(a))),
    );
    expect(table.GlobalSecondaryIndexes).toEqual(expected.GlobalSecondaryIndexes);
    expect(table.GlobalSecondaryIndexes[0].IndexName).toBe(BY_PROJECT_INDEX);
    expect(table.PointInTimeRecoverySpecification).toEqual({ PointInTimeRecoveryEnabled: true });
    expect(table.TimeToLiveSpecification).toEqual({ AttributeName: TTL_ATTRIBUTE, Enabled: true });
    expect(table.SSESpecification).toEqual({ SSEEnabled: true });
  });
});

describe('workers', () => {
  /** The queue feeding this function (its event source mapping's EventSourceArn). */
  function queueFeeding(functionId: string) {
    const mapping = Object.values(template.findResources('AWS::Lambda::EventSourceMapping')).find(
      (m) => m.Properties.FunctionName.Ref === functionId,
    )!;
    const [queueId] = mapping.Properties.EventSourceArn['Fn::GetAtt'];
    return template.findResources('AWS::SQS::Queue')[queueId]!;
  }

  it("encrypts every queue (chunks, webhooks, their dead-letter queues, the pipelines' dead letters), refuses plain HTTP, and redrives after 5 receives", () => {
    const queues = template.findResources('AWS::SQS::Queue');
    expect(Object.keys(queues)).toHaveLength(5);
    for (const queue of Object.values(queues)) expect(queue.Properties.SqsManagedSseEnabled).toBe(true);
    const chunks = queueFeeding(functionByDescription('Chunk worker').id);
    const deadLetters = Object.entries(queues).filter(([, q]) => !q.Properties.RedrivePolicy);
    expect(deadLetters).toHaveLength(3);
    expect(chunks.Properties.RedrivePolicy).toEqual({
      deadLetterTargetArn: { 'Fn::GetAtt': [expect.stringMatching(/DeadLetterQueue/), 'Arn'] },
      maxReceiveCount: MAX_RECEIVE_COUNT,
    });
    expect(deadLetters.map(([id]) => id)).toContain(chunks.Properties.RedrivePolicy.deadLetterTargetArn['Fn::GetAtt'][0]);
    const tlsOnly = Object.values(template.findResources('AWS::SQS::QueuePolicy')).filter((p) =>
      p.Properties.PolicyDocument.Statement.some((s: any) => s.Effect === 'Deny' && s.Condition?.Bool?.['aws:SecureTransport'] === 'false'),
    );
    expect(tlsOnly).toHaveLength(5);
  });

  it('sets the visibility timeout to at least six times the worker timeout', () => {
    const worker = functionByDescription('Chunk worker');
    const main = queueFeeding(worker.id);
    expect(worker.properties.Timeout).toBe(15 * 60);
    expect(main.Properties.VisibilityTimeout).toBeGreaterThanOrEqual(VISIBILITY_TIMEOUT_FACTOR * worker.properties.Timeout);
  });

  it('lets the worker send to the chunk queue, to hand back a chunk it ran out of time for', () => {
    const [mainId] = Object.entries(template.findResources('AWS::SQS::Queue')).find(([, q]) => q.Properties.RedrivePolicy)!;
    const senders = policyStatements(template).filter(({ statement }) => [statement.Action].flat().includes('sqs:SendMessage'));
    const worker = senders.find((s) => /Worker/.test(s.source));
    expect(worker?.statement.Resource).toEqual({ 'Fn::GetAtt': [mainId, 'Arn'] });
  });

  it('feeds the worker one chunk at a time, with MaximumConcurrency and ReportBatchItemFailures', () => {
    const worker = functionByDescription('Chunk worker');
    // The chunk worker's, the webhook delivery function's, and the table stream's to the events function and to the file reaper.
    template.resourceCountIs('AWS::Lambda::EventSourceMapping', 4);
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      FunctionName: { Ref: worker.id },
      BatchSize: 1,
      FunctionResponseTypes: ['ReportBatchItemFailures'],
      ScalingConfig: { MaximumConcurrency: 50 },
    });
  });

  it('rejects a MaximumConcurrency outside 2..1000 at synth', () => {
    expect(() => checkProps({ workerMaxConcurrency: 1 })).toThrow(/workerMaxConcurrency/);
    expect(() => checkProps({ workerMaxConcurrency: 1001 })).toThrow(/workerMaxConcurrency/);
    expect(() => checkProps({ workerMaxConcurrency: 2 })).not.toThrow();
  });
});

describe('functions', () => {
  it('runs every function on Node.js 24 on arm64, bundled as ESM', () => {
    const all = Object.values(functions());
    // Every handler of functions/contract.ts (the full configuration has pipelines).
    expect(all).toHaveLength(Object.keys(HANDLERS).length);
    for (const fn of all) {
      expect(fn.Properties.Runtime).toBe('nodejs24.x');
      expect(fn.Properties.Architectures).toEqual(['arm64']);
      expect(fn.Properties.Handler).toBe('index.handler');
    }
  });

  it('sizes each function for its role', () => {
    const sizes = (prefix: string) => {
      const { properties } = functionByDescription(prefix);
      return [properties.MemorySize, properties.Timeout];
    };
    expect(sizes('OpenAI-compatible Batch API')).toEqual([512, 300]);
    expect(sizes('Batch lifecycle: validate')).toEqual([1024, 900]);
    expect(sizes('Batch lifecycle: send')).toEqual([1024, 900]);
    expect(sizes('Batch lifecycle: store')).toEqual([256, 30]);
    expect(sizes('Batch lifecycle: merge')).toEqual([1024, 900]);
    expect(sizes('Chunk worker')).toEqual([1024, 900]);
  });

  it('gives each function the environment of the contract, with secret ids and never a key', () => {
    for (const fn of Object.values(functions())) {
      const variables = fn.Properties.Environment.Variables;
      for (const name of [ENV.tableName, ENV.bucketName, ENV.queueUrl, ENV.upstreamConfig, 'MIN_COMPLETION_WINDOW', 'MAX_FILE_BYTES']) {
        expect(variables, name).toHaveProperty(name);
      }
      expect(variables.MIN_COMPLETION_WINDOW).toBe('1h');
      expect(variables.MAX_FILE_BYTES).toBe(String(100 * 1024 * 1024));
      // A batch's chunks on the queue at once: twice the workers (the test stack's MaximumConcurrency is 50).
      expect(variables.CHUNK_WINDOW).toBe('100');
    }
    // The functions that start executions, or signal them outside of one, know the state machine's
    // ARN; the functions it invokes do not (that would be a cycle): wait-for-chunks signals with a token.
    for (const prefix of ['OpenAI-compatible Batch API', 'Chunk worker', 'Pipeline run']) {
      expect(functionByDescription(prefix).properties.Environment.Variables).toHaveProperty(ENV.stateMachineArn);
    }
    for (const prefix of ['Batch lifecycle: validate', 'Batch lifecycle: send', 'Batch lifecycle: store', 'Batch lifecycle: merge']) {
      expect(functionByDescription(prefix).properties.Environment.Variables).not.toHaveProperty(ENV.stateMachineArn);
    }
    const config = JSON.parse(
      resolveIntrinsics(functionByDescription('Chunk worker').properties.Environment.Variables[ENV.upstreamConfig]),
    );
    expect(config.default.baseUrl).toBe('https://api.openai.com/v1');
    expect(config.default.apiKeySecret).toMatch(/^[A-Za-z0-9]+$/); // the created secret's Ref (its ARN)
    expect(config.routes['qwen-*']).toEqual({
      baseUrl: 'https://dashscope.aliyuncs.com/compatible-mode/v1',
      apiKeySecret: 'team/dashscope-key',
      maxConcurrency: 32,
    });
    expect(config.routes['llama-local']).toEqual({ baseUrl: 'http://vllm.internal:8000/v1' });
  });

  it('refuses an API key given where a secret name belongs', () => {
    expect(() => checkProps({ upstream: { default: { baseUrl: 'https://api.openai.com/v1', apiKeySecret: 'sk-proj-abc' } } })).toThrow(
      /looks like an API key/,
    );
  });
});

describe('least privilege', () => {
  it('grants no wildcard action in any policy statement', () => {
    const statements = policyStatements(template);
    expect(statements.length).toBeGreaterThan(10);
    for (const { source, statement } of statements) {
      const actions = [statement.Action ?? []].flat();
      for (const action of actions) expect(action, `${source}: ${action}`).not.toMatch(/^(\*|[a-z0-9-]+:\*)$/);
    }
  });

  it('uses no AWS managed policy: each role writes only to its own log group', () => {
    for (const role of Object.values(template.findResources('AWS::IAM::Role'))) {
      expect(role.Properties.ManagedPolicyArns ?? []).toEqual([]);
    }
  });

  it('lets only the workers read the upstream secrets', () => {
    const readers = policyStatements(template).filter(({ statement }) =>
      [statement.Action].flat().includes('secretsmanager:GetSecretValue'),
    );
    expect(new Set(readers.map((r) => r.source)).size).toBe(1);
    expect(readers[0]!.source).toMatch(/Worker/);
  });

  it("keeps signed keys' secrets under a rotating KMS key that only the API may decrypt with, and names it in an output", () => {
    template.resourceCountIs('AWS::KMS::Key', 1);
    const [keyId, key] = Object.entries(template.findResources('AWS::KMS::Key'))[0]!;
    expect(key.Properties.EnableKeyRotation).toBe(true);
    expect(key.DeletionPolicy).toBe('Retain');
    const kmsStatements = policyStatements(template).filter(({ statement }) =>
      [statement.Action].flat().some((action) => String(action).startsWith('kms:')),
    );
    expect(kmsStatements).toHaveLength(1);
    expect(kmsStatements[0]!.source).toMatch(/Api/);
    expect(kmsStatements[0]!.statement).toMatchObject({
      Effect: 'Allow',
      Action: 'kms:Decrypt',
      Resource: { 'Fn::GetAtt': [keyId, 'Arn'] },
    });
    const api = functionByDescription('OpenAI-compatible Batch API:');
    expect(api.properties.Environment.Variables[ENV.signingKeyArn]).toEqual({ 'Fn::GetAtt': [keyId, 'Arn'] });
    for (const [id, fn] of Object.entries(functions()))
      if (id !== api.id) expect(fn.Properties.Environment?.Variables?.[ENV.signingKeyArn]).toBeUndefined();
    expect(template.findOutputs('SigningKeyArn').SigningKeyArn!.Value).toEqual({ 'Fn::GetAtt': [keyId, 'Arn'] });
  });

  it('lets the API start executions and send task failures, and the workers send task success', () => {
    const byAction = (action: string) =>
      policyStatements(template)
        .filter(({ statement }) => [statement.Action].flat().includes(action))
        .map((r) => r.source);
    expect(byAction('states:StartExecution').some((s) => /Api/.test(s))).toBe(true);
    expect(byAction('states:SendTaskFailure').some((s) => /Api/.test(s))).toBe(true);
    expect(byAction('states:SendTaskSuccess').some((s) => /Worker/.test(s))).toBe(true);
    expect(byAction('states:SendTaskSuccess').some((s) => /WaitForChunks/.test(s))).toBe(true);
  });
});

describe('lifecycle', () => {
  it('lets wait-for-chunks answer the task tokens of its state machine only, in a policy the function does not depend on', () => {
    const [machineId] = Object.keys(template.findResources('AWS::StepFunctions::StateMachine'));
    const waitRole = functionByDescription('Batch lifecycle: store').properties.Role['Fn::GetAtt'][0];
    const grants = Object.values(template.findResources('AWS::IAM::Policy')).filter(
      (p) =>
        JSON.stringify(p.Properties.Roles) === JSON.stringify([{ Ref: waitRole }]) && JSON.stringify(p).includes('states:SendTaskSuccess'),
    );
    expect(grants).toHaveLength(1);
    expect(grants[0]!.Properties.PolicyDocument.Statement).toContainEqual(
      expect.objectContaining({
        Action: ['states:SendTaskSuccess', 'states:SendTaskFailure', 'states:SendTaskHeartbeat'],
        Resource: { Ref: machineId },
      }),
    );
  });

  it('runs the start sweep every 5 minutes, allowed to start and describe executions of its state machine only', () => {
    const [machineId] = Object.keys(template.findResources('AWS::StepFunctions::StateMachine'));
    const sweep = functionByDescription('Start sweep:');
    expect(sweep.properties.Environment.Variables[ENV.stateMachineArn]).toEqual({ Ref: machineId });
    template.hasResourceProperties('AWS::Events::Rule', {
      ScheduleExpression: 'rate(5 minutes)',
      Targets: [Match.objectLike({ Arn: { 'Fn::GetAtt': [sweep.id, 'Arn'] } })],
    });
    const role = sweep.properties.Role['Fn::GetAtt'][0];
    const statements = Object.values(template.findResources('AWS::IAM::Policy'))
      .filter((p) => JSON.stringify(p.Properties.Roles) === JSON.stringify([{ Ref: role }]))
      .flatMap((p) => p.Properties.PolicyDocument.Statement as { Action: string | string[]; Resource: unknown }[]);
    const on = (action: string) =>
      statements.filter((s) => [s.Action].flat().includes(action)).flatMap((s) => [s.Resource].flat().map((r) => flattenReference(r)));
    expect(on('states:StartExecution')).toEqual([`<${machineId}>`]);
    // The execution ARNs of this state machine (its name is the ARN's 7th field).
    expect(on('states:DescribeExecution')).toEqual([
      expect.stringMatching(
        new RegExp(`^arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:.*"Ref":"${machineId}".*:\\*$`),
      ),
    ]);
    // It lists the unfinished batches through the open index, and scans nothing.
    expect(on('dynamodb:Query')).toEqual([expect.stringMatching(/\/index\/open$/)]);
    expect(on('dynamodb:Scan')).toEqual([]);
  });

  it('has no dependency cycle (CloudFormation would refuse the template at deploy)', () => {
    const resources = template.toJSON().Resources as Record<string, { DependsOn?: string | string[]; Properties?: unknown }>;
    const edges = new Map<string, Set<string>>();
    const collect = (value: unknown, into: Set<string>): void => {
      if (Array.isArray(value)) return value.forEach((v) => collect(v, into));
      if (typeof value === 'string') {
        for (const match of value.matchAll(/\$\{([A-Za-z0-9]+)(\.[A-Za-z.]+)?\}/g)) into.add(match[1]!);
        return;
      }
      if (!value || typeof value !== 'object') return;
      const node = value as Record<string, unknown>;
      if (typeof node.Ref === 'string') into.add(node.Ref);
      if (Array.isArray(node['Fn::GetAtt'])) into.add(node['Fn::GetAtt'][0] as string);
      Object.values(node).forEach((v) => collect(v, into));
    };
    for (const [id, resource] of Object.entries(resources)) {
      const deps = new Set<string>([resource.DependsOn ?? []].flat());
      collect(resource.Properties, deps);
      edges.set(id, new Set([...deps].filter((d) => d in resources)));
    }
    const state = new Map<string, 'visiting' | 'done'>();
    const visit = (id: string, path: string[]): void => {
      if (state.get(id) === 'done') return;
      if (state.get(id) === 'visiting') throw new Error(`cycle: ${[...path, id].join(' -> ')}`);
      state.set(id, 'visiting');
      for (const next of edges.get(id) ?? []) visit(next, [...path, id]);
      state.set(id, 'done');
    };
    expect(() => [...edges.keys()].forEach((id) => visit(id, []))).not.toThrow();
  });

  it('is a Standard state machine whose definition is valid ASL', () => {
    template.hasResourceProperties('AWS::StepFunctions::StateMachine', {
      StateMachineType: 'STANDARD',
      LoggingConfiguration: Match.objectLike({ Level: 'ERROR' }),
      TracingConfiguration: { Enabled: true },
    });
    const result = validateAsl(definition(), { checkArn: true, checkPaths: true });
    expect(result.isValid, result.errorsText('\n')).toBe(true);
  });

  it('has no Map state: a fixed number of transitions per batch', () => {
    const states = definition().States as Record<string, { Type: string }>;
    expect(Object.values(states).map((s) => s.Type)).not.toContain('Map');
    expect(Object.keys(states).sort()).toEqual([
      'AfterValidate',
      'BatchFailed',
      'DrainAfterCancel',
      'Enqueue',
      'FailBatch',
      'FailBatchFailed',
      'Finalize',
      'Validate',
      'ValidationFailed',
      'WaitForChunks',
    ]);
  });

  it('routes on the status validate returns', () => {
    const { States: states, StartAt } = definition();
    expect(StartAt).toBe('Validate');
    expect(states.Validate.Next).toBe('AfterValidate');
    const choices = states.AfterValidate.Choices.map((c: any) => [c.Variable, c.StringEquals, c.Next]);
    expect(choices).toEqual([
      ['$.status', 'in_progress', 'Enqueue'],
      ['$.status', 'failed', 'ValidationFailed'],
      ['$.status', 'cancelling', 'Finalize'],
    ]);
    expect(states.AfterValidate.Default).toBe('Finalize');
    expect(states.ValidationFailed.Type).toBe('Succeed');
    expect(states.Enqueue.Next).toBe('WaitForChunks');
    expect(states.WaitForChunks.Next).toBe('Finalize');
    expect(states.Finalize.End).toBe(true);
  });

  it('waits for the task token, as long as what is left of the window', () => {
    const wait = definition().States.WaitForChunks;
    expect(wait.Resource).toBe('arn:aws:states:::lambda:invoke.waitForTaskToken');
    expect(wait.TimeoutSecondsPath).toBe('$.waitSeconds');
    expect(wait.Parameters.Payload).toEqual({ 'batchId.$': '$.batchId', 'taskToken.$': '$$.Task.Token' });
    expect(wait.ResultPath).toBeNull();
    expect(wait.Catch.map((c: any) => [c.ErrorEquals, c.Next])).toEqual([
      [['States.Timeout'], 'Finalize'],
      [[CANCEL_ERROR], 'DrainAfterCancel'],
      [['States.ALL'], 'FailBatch'],
    ]);
    // The cancel is never retried: the first retrier that matches decides, and this one says 0.
    expect(wait.Retry[0]).toEqual({ ErrorEquals: [CANCEL_ERROR], MaxAttempts: 0 });
  });

  it('after a cancel, waits once more for the chunks in flight, as long as the drain time, then finalizes', () => {
    const states = definition().States;
    const drain = states.DrainAfterCancel;
    expect(drain.Type).toBe('Task');
    expect(drain.Resource).toBe('arn:aws:states:::lambda:invoke.waitForTaskToken');
    // The same function as WaitForChunks, told it is draining.
    expect(drain.Parameters.FunctionName).toEqual(states.WaitForChunks.Parameters.FunctionName);
    expect(drain.Parameters.Payload).toEqual({ 'batchId.$': '$.batchId', 'taskToken.$': '$$.Task.Token', draining: true });
    expect(drain.TimeoutSecondsPath).toBe('$.drainSeconds');
    expect(drain.ResultPath).toBeNull();
    // WaitForChunks' catch keeps its input, where Enqueue put drainSeconds.
    expect(states.WaitForChunks.Catch.find((c: any) => c.Next === 'DrainAfterCancel').ResultPath).toBe('$.error');
    // Task success (the last chunk), the drain's timeout, and any error: all end in Finalize, and
    // nothing leads back into a wait (a fixed number of transitions, never a polling loop).
    expect(drain.Next).toBe('Finalize');
    expect(drain.Catch.map((c: any) => [c.ErrorEquals, c.Next, c.ResultPath])).toEqual([
      [['States.Timeout'], 'Finalize', '$.error'],
      [['States.ALL'], 'Finalize', '$.error'],
    ]);
    expect(drain.Retry[0]).toEqual({ ErrorEquals: [CANCEL_ERROR], MaxAttempts: 0 });
    const targets = Object.values(states).flatMap((state: any) => [
      state.Next,
      state.Default,
      ...(state.Catch ?? []).map((c: any) => c.Next),
      ...(state.Choices ?? []).map((c: any) => c.Next),
    ]);
    expect(targets.filter((target) => target === 'DrainAfterCancel')).toHaveLength(1);
    expect(targets.filter((target) => target === 'WaitForChunks')).toHaveLength(1);
  });

  it('gives every Task a Catch that ends the batch: a step whose retries are spent fails it with the reason', () => {
    const states = definition().States;
    const tasks = Object.entries(states).filter(([, state]: [string, any]) => state.Type === 'Task');
    expect(tasks.map(([name]) => name).sort()).toEqual([
      'DrainAfterCancel',
      'Enqueue',
      'FailBatch',
      'Finalize',
      'Validate',
      'WaitForChunks',
    ]);
    for (const [name, state] of tasks as [string, any][]) {
      // The last catcher takes everything left: no error ends the execution with the batch where it was.
      expect(state.Catch.at(-1).ErrorEquals, name).toEqual(['States.ALL']);
    }
    for (const name of ['Validate', 'Enqueue', 'WaitForChunks', 'Finalize']) {
      expect(states[name].Catch.at(-1), name).toEqual({ ErrorEquals: ['States.ALL'], Next: 'FailBatch', ResultPath: '$.failure' });
    }
    // After a cancel, anything ends in Finalize (cancelled), whose own Catch is FailBatch.
    expect(states.DrainAfterCancel.Catch.at(-1).Next).toBe('Finalize');

    // FailBatch: the finalize function, told the failure; it retries like the others, then ends the execution failed.
    const fail = states.FailBatch;
    expect(fail.Resource).toBe(states.Finalize.Resource);
    expect(fail.Parameters).toEqual({ 'batchId.$': '$.batchId', 'failure.$': '$.failure' });
    expect(fail.Retry[0]).toMatchObject({ IntervalSeconds: 2, BackoffRate: 2, MaxAttempts: 6 });
    expect(fail.Next).toBe('BatchFailed');
    expect(states.BatchFailed).toMatchObject({ Type: 'Fail', Error: 'BatchStepFailed' });
    expect(fail.Catch).toEqual([{ ErrorEquals: ['States.ALL'], Next: 'FailBatchFailed', ResultPath: '$.failBatchError' }]);
    expect(states.FailBatchFailed).toMatchObject({ Type: 'Fail', Error: 'BatchNotEnded' });
  });

  it('retries every Lambda task with backoff', () => {
    const states = definition().States;
    for (const name of ['Validate', 'Enqueue', 'WaitForChunks', 'DrainAfterCancel', 'Finalize']) {
      const retrier = states[name].Retry.find((r: any) => r.ErrorEquals.includes('States.TaskFailed'));
      expect(retrier, name).toMatchObject({ IntervalSeconds: 2, BackoffRate: 2, MaxAttempts: 6 });
      expect(retrier.ErrorEquals).toEqual(expect.arrayContaining(['Lambda.ServiceException', 'Lambda.TooManyRequestsException']));
    }
    for (const name of ['Validate', 'Enqueue', 'Finalize']) {
      // payloadResponseOnly: the function itself is the resource, and its answer the state's output.
      expect(states[name].Resource).toMatch(/^arn:aws:lambda:/);
      expect(states[name].Parameters).toEqual({ 'batchId.$': '$.batchId' });
    }
  });
});

describe('API', () => {
  it('is an HTTP API that proxies $default to the API Lambda with payload 2.0, and logs access', () => {
    template.resourceCountIs('AWS::ApiGatewayV2::Api', 1);
    template.hasResourceProperties('AWS::ApiGatewayV2::Api', { ProtocolType: 'HTTP' });
    template.hasResourceProperties('AWS::ApiGatewayV2::Route', { RouteKey: '$default' });
    template.hasResourceProperties('AWS::ApiGatewayV2::Integration', { IntegrationType: 'AWS_PROXY', PayloadFormatVersion: '2.0' });
    template.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      StageName: '$default',
      AutoDeploy: true,
      AccessLogSettings: Match.objectLike({ DestinationArn: Match.anyValue() }),
    });
  });

  it('answers every route before the gateway cuts it (API_ROUTE_DEADLINE 25 s), and may hand a join to an invocation of itself', () => {
    const api = functionByDescription('OpenAI-compatible Batch API');
    expect(api.properties.Environment.Variables.API_ROUTE_DEADLINE).toBe('25s');
    expect(api.properties.Timeout).toBeGreaterThan(30);
    const role = { Ref: api.properties.Role['Fn::GetAtt'][0] };
    const onItself = Object.entries(template.findResources('AWS::IAM::Policy')).flatMap(([id, p]) =>
      JSON.stringify(p.Properties.Roles) === JSON.stringify([role])
        ? (p.Properties.PolicyDocument.Statement as { Action: unknown; Resource: unknown }[])
            .filter((statement) => JSON.stringify(statement.Resource) === JSON.stringify({ 'Fn::GetAtt': [api.id, 'Arn'] }))
            .map((statement) => ({ id, statement }))
        : [],
    );
    expect(onItself).toEqual([
      { id: expect.stringMatching(/InvokeSelf/), statement: expect.objectContaining({ Action: 'lambda:InvokeFunction' }) },
    ]);
    // Not in the role's default policy, which the function depends on (that would be a cycle).
    expect(onItself[0]!.id).not.toMatch(/DefaultPolicy/);
  });

  it('throttles the stage and reserves the API function its share of concurrency by default, leaving the rest to the workers', () => {
    template.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      StageName: '$default',
      DefaultRouteSettings: { ThrottlingRateLimit: 100, ThrottlingBurstLimit: 200 },
    });
    expect(functionByDescription('OpenAI-compatible Batch API').properties.ReservedConcurrentExecutions).toBe(50);
    const reserving = Object.values(functions()).filter((fn) => fn.Properties.ReservedConcurrentExecutions !== undefined);
    expect(reserving).toHaveLength(1);
  });

  it('takes both from the configuration, and null for none', () => {
    const tuned = synthesize({ ...FULL_PROPS, apiThrottle: { rateLimit: 20, burstLimit: 40 }, apiReservedConcurrency: 7 }).template;
    tuned.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      DefaultRouteSettings: { ThrottlingRateLimit: 20, ThrottlingBurstLimit: 40 },
    });
    tuned.hasResourceProperties('AWS::Lambda::Function', {
      Description: Match.stringLikeRegexp('^OpenAI-compatible'),
      ReservedConcurrentExecutions: 7,
    });

    const none = synthesize({ ...FULL_PROPS, apiThrottle: null, apiReservedConcurrency: null }).template;
    const stage = Object.values(none.findResources('AWS::ApiGatewayV2::Stage'))[0]!;
    expect(stage.Properties.DefaultRouteSettings).toBeUndefined();
    none.resourcePropertiesCountIs('AWS::Lambda::Function', { ReservedConcurrentExecutions: Match.anyValue() }, 0);

    expect(() => checkProps({ apiThrottle: { rateLimit: 0, burstLimit: 10 } })).toThrow(/apiThrottle/);
    expect(() => checkProps({ apiThrottle: { rateLimit: 10, burstLimit: 1.5 } })).toThrow(/apiThrottle/);
    expect(() => checkProps({ apiReservedConcurrency: 0 })).toThrow(/apiReservedConcurrency/);
  });

  it('outputs the base URL ending in /v1, the table name, and the secret the team must fill', () => {
    const outputs = template.findOutputs('*');
    expect(resolveIntrinsics(outputs.ApiBaseUrl!.Value)).toMatch(/^https:\/\/.+\/v1$/);
    expect(Object.keys(outputs)).toEqual(
      expect.arrayContaining(['TableName', 'BucketName', 'StateMachineArn', 'AlarmTopicArn', 'DashboardName', 'DefaultApiKeySecretArn']),
    );
  });
});

describe('monitoring and pipelines', () => {
  it('alarms on dead letters, worker errors, failed executions and API 5xx', () => {
    const metrics = Object.values(template.findResources('AWS::CloudWatch::Alarm')).map(
      (a) => `${a.Properties.Namespace}/${a.Properties.MetricName}`,
    );
    expect(metrics).toEqual(
      expect.arrayContaining([
        'AWS/SQS/ApproximateNumberOfMessagesVisible',
        'AWS/Lambda/Errors',
        'AWS/States/ExecutionsFailed',
        'AWS/ApiGateway/5xx',
      ]),
    );
    template.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
    const body = resolveIntrinsics(Object.values(template.findResources('AWS::CloudWatch::Dashboard'))[0]!.Properties.DashboardBody);
    expect(body).toContain('ApproximateAgeOfOldestMessage');
    expect(body).toContain('"Duration"');
  });

  it('runs each scheduled pipeline from an EventBridge Scheduler schedule in its time zone, with the scheduled time as the run key', () => {
    const run = functionByDescription('Pipeline run');
    template.resourceCountIs('AWS::Scheduler::Schedule', 1);
    template.hasResourceProperties('AWS::Scheduler::Schedule', {
      ScheduleExpression: 'cron(0 2 * * ? *)',
      ScheduleExpressionTimezone: 'Europe/Paris',
      Target: Match.objectLike({
        Arn: { 'Fn::GetAtt': [run.id, 'Arn'] },
        RetryPolicy: Match.objectLike({ MaximumRetryAttempts: 2 }),
        DeadLetterConfig: { Arn: Match.anyValue() },
      }),
    });
    const schedule = Object.values(template.findResources('AWS::Scheduler::Schedule'))[0]!;
    expect(JSON.parse(schedule.Properties.Target.Input)).toEqual({
      kind: 'schedule',
      pipeline: 'nightly-reviews',
      scheduledTime: '<aws.scheduler.scheduled-time>',
    });
    // No pipeline refers to a Files API id: the function is given the pipelines, sources and all.
    const config = JSON.parse(run.properties.Environment.Variables[ENV.pipelinesConfig]);
    expect(config.map((p: { name: string; source: string }) => [p.name, p.source])).toEqual([
      ['nightly-reviews', 'inbox/reviews/{yyyy}-{MM}-{dd}.jsonl'],
      ['drop', 'inbox/reviews/drop/'],
      ['partner-feed', 's3://partner-feed-bucket/exports/'],
    ]);
    expect(JSON.stringify(config)).not.toMatch(/file-/);
  });

  it("runs each drop pipeline from S3's Object Created events under its prefix, the service's bucket sending them", () => {
    const bucket = Object.entries(template.findResources('AWS::S3::Bucket'))[0]!;
    expect(bucket[1].Properties.NotificationConfiguration).toEqual({ EventBridgeConfiguration: { EventBridgeEnabled: true } });
    template.hasResourceProperties('AWS::Events::Rule', {
      EventPattern: {
        source: ['aws.s3'],
        'detail-type': ['Object Created'],
        detail: { bucket: { name: [{ Ref: bucket[0] }] }, object: { key: [{ prefix: 'inbox/reviews/drop/' }] } },
      },
      Targets: [
        Match.objectLike({
          RetryPolicy: Match.objectLike({ MaximumRetryAttempts: 2 }),
          DeadLetterConfig: { Arn: Match.anyValue() },
          InputTransformer: Match.objectLike({
            InputPathsMap: Match.objectLike({ 'detail-bucket-name': '$.detail.bucket.name', 'detail-object-key': '$.detail.object.key' }),
          }),
        }),
      ],
    });
    template.hasResourceProperties('AWS::Events::Rule', {
      EventPattern: Match.objectLike({ detail: { bucket: { name: ['partner-feed-bucket'] }, object: { key: [{ prefix: 'exports/' }] } } }),
    });
    // An invocation that fails every retry lands on the dead-letter queue too.
    template.hasResourceProperties('AWS::Lambda::EventInvokeConfig', {
      MaximumRetryAttempts: 2,
      DestinationConfig: { OnFailure: { Destination: Match.anyValue() } },
    });
  });

  it('alarms on the pipelines: the dead-letter queue, and runs that failed for their source', () => {
    const alarms = Object.values(template.findResources('AWS::CloudWatch::Alarm'));
    const runsFailed = alarms.find((a) => a.Properties.MetricName === 'PipelineRunsFailed');
    expect(runsFailed?.Properties).toMatchObject({
      Namespace: 'BatchService',
      Threshold: 1,
      AlarmActions: [{ Ref: expect.stringMatching(/AlarmTopic/) }],
    });
    const deadLetters = alarms.find((a) => /pipeline failure nobody will retry/.test(a.Properties.AlarmDescription));
    expect(deadLetters?.Properties.MetricName).toBe('ApproximateNumberOfMessagesVisible');
    expect(deadLetters?.Properties.AlarmActions).toHaveLength(1);
  });

  it('has no pipeline resources without pipelines, and refuses the old schedules with the way to migrate', () => {
    const bare = synthesize({}, { nag: false }).template;
    bare.resourceCountIs('AWS::Scheduler::Schedule', 0);
    expect(Object.keys(bare.findResources('AWS::S3::Bucket')).length).toBe(1);
    expect(Object.values(bare.findResources('AWS::S3::Bucket'))[0]!.Properties.NotificationConfiguration).toBeUndefined();
    expect(() => checkProps({ schedules: [] } as never)).toThrow(/schedules was replaced by pipelines/);
    expect(() => checkProps({ pipelines: [{ name: 'x' }] as never })).toThrow(/pipelines: pipeline 'x'/);
    expect(() =>
      checkProps({
        pipelines: [
          {
            name: 'fast',
            project: 'p',
            schedule: 'rate(5 seconds)',
            source: 'in/a.jsonl',
            destination: 'out/',
            endpoint: '/v1/embeddings',
          },
        ],
      }),
    ).toThrow(/smallest rate is rate\(1 minute\)/);
  });
});

describe('cdk-nag', () => {
  it('leaves no unacknowledged AwsSolutions error (synth would have thrown), and every acknowledgment has a reason', () => {
    const errors = synthesized.report.pluginReports
      .flatMap((r) => r.violations)
      .filter((v) => /AwsSolutions/.test(v.ruleName) && (v.severity === 'error' || v.severity === 'fatal'));
    expect(errors.map((v) => v.ruleName)).toEqual([]);
    // Each acknowledgment is recorded on its construct as { "<namespace>::<rule id>": reason }.
    const acknowledged = synthesized.stack.node
      .findAll()
      .flatMap((c) => c.node.metadata.filter((m) => m.type === Validations.ACKNOWLEDGED_RULES_METADATA_KEY))
      .flatMap((m) => Object.entries(m.data as Record<string, string>));
    expect(acknowledged.length).toBeGreaterThan(10);
    for (const [id, reason] of acknowledged) {
      expect(id).toMatch(/AwsSolutions-(S1|SMG4|L1|SF1|APIG4|SQS3|IAM5\[.+\])$/);
      expect(reason.length, id).toBeGreaterThan(40);
    }
  });

  it('is really checking: an unprotected bucket added to the same stack fails the synth', () => {
    const app = new App({ context: { 'aws:cdk:bundling-stacks': [] } });
    Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
    const stack = new BatchServiceStack(app, 'NagControl', { service: FULL_PROPS });
    new s3.Bucket(stack, 'Unprotected');
    expect(() => app.synth()).toThrow(/AwsSolutions-S10/);
  });
});
