// Least privilege, both ways: every S3 and DynamoDB call the real handlers make (run in-process
// by the AWS harness, driven with the openai SDK through uploads, batches that complete, fail,
// are cancelled and expire, downloads and deletes) is allowed by the synthesized policy of the
// function that made it, and what no function needs (deleting an API key, scanning the table,
// legal holds, another prefix's objects) is allowed to none.
import { DeleteItemCommand, GetItemCommand } from '@aws-sdk/client-dynamodb';
import type { CfnResource } from 'aws-cdk-lib';
import type { Template } from 'aws-cdk-lib/assertions';
import type { IConstruct } from 'constructs';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TTL_PRINCIPAL } from '../../functions/contract.js';
import { logger } from '../../functions/observability.js';
import type { BatchServiceStack } from '../../infra/batch-service-stack.js';
import type { ServiceFunction } from '../../infra/constructs/service-function.js';
import { batchRecord } from '../adapters/meta-store-contract.js';
import { type AwsCall, AwsHarness, FUNCTIONS, type FunctionName } from '../support/aws-harness.js';
import { chatLines, collectResults, submit, upload, waitForBatch, writeJsonl } from '../support/e2e.js';
import { type IamRequest, iamRequests, isAllowed, type PolicyStatement, roleStatements } from '../support/iam-policy.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';
import { synthesize } from './support.js';

let template: Template;
let stack: BatchServiceStack;
let bucketArn: string;
let tableArn: string;
const statements = new Map<string, PolicyStatement[]>();

const logicalId = (construct: IConstruct) => stack.resolve((construct.node.defaultChild as CfnResource).logicalId) as string;

beforeAll(() => {
  ({ template, stack } = synthesize(undefined, { nag: false }));
  const service = stack.service;
  bucketArn = `<${logicalId(service.storage.bucket)}.Arn>`;
  tableArn = `<${logicalId(service.storage.table)}.Arn>`;
  const roles: Record<string, ServiceFunction> = {
    api: service.api.handler,
    validate: service.lifecycle.validate,
    enqueue: service.lifecycle.enqueue,
    'wait-for-chunks': service.lifecycle.waitForChunks,
    finalize: service.lifecycle.finalize,
    worker: service.workers.worker,
    'pipeline-run': service.pipelines!.runner,
    events: service.events.dispatcher,
    'start-sweep': service.startSweep.sweeper,
    'file-reaper': service.fileReaper.reaper,
  };
  for (const [name, fn] of Object.entries(roles)) statements.set(name, roleStatements(template, logicalId(fn.role)));
});

const allowed = (fn: string, request: IamRequest) => isAllowed(statements.get(fn)!, request);

describe('each function may do only what it does', () => {
  const key = (kind: string) => [`${kind}#x`];

  it('no role may scan or batch-write the table, and the API may not write or delete an API key', () => {
    for (const fn of statements.keys()) {
      for (const action of [
        'dynamodb:Scan',
        'dynamodb:BatchWriteItem',
        'dynamodb:BatchGetItem',
        'dynamodb:DeleteTable',
        'dynamodb:UpdateTable',
      ]) {
        expect(allowed(fn, { action, resource: tableArn }), `${fn} ${action}`).toBe(false);
      }
      for (const action of ['dynamodb:DeleteItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem']) {
        expect(allowed(fn, { action, resource: tableArn, leadingKeys: key('APIKEY') }), `${fn} ${action} APIKEY#`).toBe(false);
      }
    }
    // The API reads keys (to authenticate), and may delete only files.
    expect(allowed('api', { action: 'dynamodb:GetItem', resource: tableArn, leadingKeys: key('APIKEY') })).toBe(true);
    expect(allowed('api', { action: 'dynamodb:DeleteItem', resource: tableArn, leadingKeys: key('FILE') })).toBe(true);
    expect(allowed('api', { action: 'dynamodb:DeleteItem', resource: tableArn, leadingKeys: key('BATCH') })).toBe(false);
    // Only the API reads API keys.
    for (const fn of [...statements.keys()].filter((name) => name !== 'api')) {
      expect(allowed(fn, { action: 'dynamodb:GetItem', resource: tableArn, leadingKeys: key('APIKEY') }), fn).toBe(false);
    }
  });

  it('every item action names the kinds of item it is for', () => {
    for (const [fn, list] of statements) {
      for (const statement of list.filter((s) => [s.Action].flat().some((a) => /^dynamodb:(Get|Put|Update|Delete)Item$/.test(String(a))))) {
        expect(statement.Condition?.['ForAllValues:StringLike']?.['dynamodb:LeadingKeys'], fn).toBeDefined();
      }
    }
  });

  it('no role may set legal holds, retention, tags or ACLs, nor reach objects outside its prefixes', () => {
    for (const fn of statements.keys()) {
      for (const action of [
        's3:PutObjectLegalHold',
        's3:PutObjectRetention',
        's3:PutObjectTagging',
        's3:PutObjectAcl',
        's3:DeleteObjectVersion',
        's3:BypassGovernanceRetention',
      ]) {
        expect(allowed(fn, { action, resource: `${bucketArn}/files/file-x` }), `${fn} ${action}`).toBe(false);
      }
      for (const action of ['s3:GetObject', 's3:PutObject', 's3:DeleteObject']) {
        expect(allowed(fn, { action, resource: `${bucketArn}/elsewhere/x` }), `${fn} ${action}`).toBe(false);
      }
      expect(allowed(fn, { action: 's3:ListBucket', resource: bucketArn, s3Prefix: '' }), `${fn} lists the whole bucket`).toBe(false);
    }
    // The worker reads its input and writes only its batch's scratch.
    expect(allowed('worker', { action: 's3:GetObject', resource: `${bucketArn}/files/file-x` })).toBe(true);
    expect(allowed('worker', { action: 's3:PutObject', resource: `${bucketArn}/files/file-x` })).toBe(false);
    expect(allowed('worker', { action: 's3:GetObject', resource: `${bucketArn}/uploads/upload-x/part-x` })).toBe(false);
    expect(allowed('enqueue', { action: 's3:PutObject', resource: `${bucketArn}/batches/batch-x/plan.json` })).toBe(false);
    expect(allowed('wait-for-chunks', { action: 's3:GetObject', resource: `${bucketArn}/files/file-x` })).toBe(false);
  });
});

describe('every call the handlers make is allowed to the function that makes it', () => {
  const calls: AwsCall[] = [];
  let upstream: UpstreamSim;
  let aws: AwsHarness;
  let openai: OpenAI;

  beforeAll(async () => {
    process.env.POWERTOOLS_METRICS_DISABLED = 'true';
    logger().setLogLevel('SILENT');
    upstream = await startUpstreamSim({ latencyMs: 10 });
    aws = await AwsHarness.start({
      env: {
        UPSTREAM_CONFIG: JSON.stringify({ default: { baseUrl: upstream.baseURL }, routes: {} }),
        UPSTREAM_BACKOFF_BASE: '10ms',
        UPSTREAM_TIMEOUT: '3s',
        CHUNK_MAX_REQUESTS: '4',
        MIN_COMPLETION_WINDOW: '1s',
        DOWNLOAD_REDIRECT_BYTES: '1000',
        CHECKPOINT_LINES: '1',
        // Quotas apply, so admission and the give-back at each batch's end make their calls too.
        PROJECT_MAX_ENQUEUED_REQUESTS: '100000',
      },
      visibilityTimeoutMs: 1_000,
      onAwsCall: (call) => {
        if (call.fn) calls.push(call);
      },
    });
    openai = aws.openai(await aws.createKey('team-a'));
  });
  afterAll(async () => {
    await aws?.close();
    await upstream?.close();
  });

  it('through completed, failed, cancelled and expired batches, uploads, downloads and deletes', async () => {
    // A batch that completes, its input deleted while it runs (the bytes go when it ends).
    upstream.configure({ latencyMs: 100 });
    const input = await upload(openai, await writeJsonl(chatLines(10, { prefix: 'ok' })));
    const completed = await openai.batches.create({ input_file_id: input.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
    await waitForBatch(openai, completed.id, (b) => b.status === 'in_progress');
    await openai.files.delete(input.id);
    const done = await waitForBatch(openai, completed.id);
    expect(done.status).toBe('completed');
    expect((await collectResults(openai, done)).ids.size).toBe(10);
    await openai.files.content(done.output_file_id!); // a redirect to a presigned URL (over 1,000 bytes)
    await openai.files.list();
    await openai.batches.list();

    // A file that fails validation.
    const bad = await openai.batches.create({
      input_file_id: (await upload(openai, await writeJsonl(['{"custom_id": "a"}', 'not json']))).id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    expect((await waitForBatch(openai, bad.id)).status).toBe('failed');

    // A cancelled batch, drained. Half its requests hang (until UPSTREAM_TIMEOUT), so it cannot
    // end before the cancel however fast the others are.
    upstream.configure({ latencyMs: 10, hangRate: 0.5, seed: 7 });
    const cancelled = await submit(openai, chatLines(16, { prefix: 'cancel' }));
    await waitForBatch(openai, cancelled.id, (b) => b.status === 'in_progress' && (b.request_counts?.completed ?? 0) > 0);
    await openai.batches.cancel(cancelled.id);
    expect((await waitForBatch(openai, cancelled.id)).status).toBe('cancelled');
    upstream.configure({ hangRate: 0 });

    // A batch whose window passes.
    upstream.configure({ hangRate: 1 });
    aws.sfn.timeoutScale = 0.25;
    const expired = await submit(openai, chatLines(4, { prefix: 'late' }), { window: '2s' });
    expect((await waitForBatch(openai, expired.id, undefined, 20_000)).status).toBe('expired');
    aws.sfn.timeoutScale = 1;
    upstream.configure({ hangRate: 0, latencyMs: 10 });

    // The Uploads API: one upload completed from two parts, one cancelled.
    const data = Buffer.from(
      chatLines(6)
        .map((line) => `${JSON.stringify(line)}\n`)
        .join(''),
    );
    const cut = data.indexOf('\n', data.length >> 1) + 1;
    const up = await openai.uploads.create({
      filename: 'two-parts.jsonl',
      purpose: 'batch',
      bytes: data.length,
      mime_type: 'application/jsonl',
    });
    const parts = [];
    for (const piece of [data.subarray(0, cut), data.subarray(cut)]) {
      parts.push(await openai.uploads.parts.create(up.id, { data: new File([new Uint8Array(piece)], 'part') }));
    }
    const joined = await openai.uploads.complete(up.id, { part_ids: parts.map((part) => part.id) });
    await openai.files.delete(joined.file!.id);
    const dropped = await openai.uploads.create({ filename: 'dropped.jsonl', purpose: 'batch', bytes: 10, mime_type: 'application/jsonl' });
    await openai.uploads.parts.create(dropped.id, { data: new File([new Uint8Array(Buffer.from('{"a":1}\n'))], 'part') });
    await openai.uploads.cancel(dropped.id);
    // The start sweep, as its schedule runs it (a batch it moves is shown in test/aws/start-sweep.test.ts).
    await aws.invoke('start-sweep', {});

    // The file reaper told of two files the TTL removed: one no batch pins (its object goes), one a
    // running batch pins (its record comes back). test/aws/file-reaper.test.ts shows what each does.
    const running = batchRecord({ status: 'in_progress' });
    await aws.meta.createBatch(running);
    const removed = [];
    for (const [index, pinned] of [false, true].entries()) {
      const file = await upload(openai, await writeJsonl(chatLines(2, { prefix: `expiring${index}` })));
      const pk = { S: `FILE#${file.id}` };
      const { Item } = await aws.dynamo.client.send(new GetItemCommand({ TableName: aws.dynamo.tableName, Key: { pk } }));
      await aws.dynamo.client.send(new DeleteItemCommand({ TableName: aws.dynamo.tableName, Key: { pk } }));
      removed.push({
        eventName: 'REMOVE',
        userIdentity: { type: 'Service', principalId: TTL_PRINCIPAL },
        dynamodb: {
          Keys: { pk },
          OldImage: { ...Item, ...(pinned ? { pinnedBy: { SS: [running.id] } } : {}) },
          SequenceNumber: String(index),
        },
      });
    }
    await aws.invoke('file-reaper', { Records: removed });
    await aws.settle();

    // The dialects: a Melious batch's one output file (its error parts rewritten under batches/),
    // and a Zhipu batch whose input goes once it is final (auto_delete_input_file).
    const melious = new OpenAI({ baseURL: 'https://api.batch.test/melious/v1', apiKey: openai.apiKey, maxRetries: 0, fetch: aws.apiFetch });
    const meliousDone = await waitForBatch(melious, (await submit(melious, chatLines(3, { prefix: 'melious' }))).id, (b) =>
      ['succeeded', 'failed', 'expired', 'cancelled'].includes(b.status as string),
    );
    expect(meliousDone).toMatchObject({ status: 'succeeded', error_file_id: null });
    const zhipu = new OpenAI({ baseURL: 'https://api.batch.test/api/paas/v4', apiKey: openai.apiKey, maxRetries: 0, fetch: aws.apiFetch });
    const zhipuInput = await upload(zhipu, await writeJsonl(chatLines(3, { prefix: 'zhipu' })));
    const zhipuBatch = await zhipu.batches.create({
      input_file_id: zhipuInput.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
      auto_delete_input_file: true,
    } as never);
    expect((await waitForBatch(zhipu, zhipuBatch.id)).status).toBe('completed');
    await expect(zhipu.files.retrieve(zhipuInput.id)).rejects.toMatchObject({ status: 404 });
    await aws.settle();

    const denied: string[] = [];
    for (const call of calls) {
      for (const request of iamRequests(call, { bucket: bucketArn, table: tableArn })) {
        if (!allowed(call.fn!, request)) {
          const facts = request.leadingKeys?.length
            ? ` (${request.leadingKeys.join(', ')})`
            : request.s3Prefix !== undefined
              ? ` (prefix ${request.s3Prefix})`
              : '';
          denied.push(`${call.fn}: ${request.action} on ${request.resource}${facts}`);
        }
      }
    }
    expect([...new Set(denied)]).toEqual([]);
    // Every function was exercised.
    const callers = new Set(calls.map((call) => call.fn));
    expect([...FUNCTIONS].filter((fn) => !callers.has(fn as FunctionName))).toEqual([]);
  });
});
