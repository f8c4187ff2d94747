// The API Lambda against API Gateway's 30 s, with API_ROUTE_DEADLINE as short as a test can wait
// (1 s) and an S3 that is slow where the test says: a complete whose join is still running at the
// deadline hands the join to an asynchronous invocation of the API function (Lambda Invoke,
// InvocationType Event) and answers 503 `upload_completing` with Retry-After, in OpenAI's envelope,
// before the grace runs out; the handed-over invocation finishes the join, and a repeated complete
// answers the completed upload, whose file holds the parts' bytes. Another route still running at
// the deadline answers 503 `request_timeout`.
import type OpenAI from 'openai';
import type { APIError } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { logger } from '../../functions/observability.js';
import { DEADLINE_GRACE_MS } from '../../shared/api/deadline.js';
import { AwsHarness } from '../support/aws-harness.js';
import { chatLines, upload as uploadFile, writeJsonl } from '../support/e2e.js';

const DEADLINE_MS = 1_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('the API Lambda at its route deadline', () => {
  let aws: AwsHarness;
  let openai: OpenAI;
  /** Delays of S3 writes and reads under files/ (the join's PutObject, a download's GetObject). */
  const slow = { filesPut: 0, filesGet: 0 };

  beforeAll(async () => {
    process.env.POWERTOOLS_METRICS_DISABLED = 'true';
    logger().setLogLevel('SILENT');
    aws = await AwsHarness.start({
      env: { API_ROUTE_DEADLINE: `${DEADLINE_MS}ms` },
      s3Middleware: (next, context) => async (args) => {
        const key = String(args.input?.Key ?? '');
        if (key.startsWith('files/')) {
          if (context.commandName === 'PutObjectCommand' && slow.filesPut) await sleep(slow.filesPut);
          if (context.commandName === 'GetObjectCommand' && slow.filesGet) await sleep(slow.filesGet);
        }
        return next(args);
      },
    });
    openai = aws.openai(await aws.createKey('team-a'));
  });
  afterAll(async () => {
    await aws?.close();
  });

  it('hands a long join over and answers 503 upload_completing in time; a repeated complete gets the completed upload', async () => {
    const lines = chatLines(4).map((line) => `${JSON.stringify(line)}\n`);
    const data = lines.join('');
    const upload = await openai.uploads.create({
      filename: 'slow.jsonl',
      purpose: 'batch',
      bytes: data.length,
      mime_type: 'application/jsonl',
    });
    const parts = [];
    for (const piece of [lines.slice(0, 2).join(''), lines.slice(2).join('')]) {
      parts.push(await openai.uploads.parts.create(upload.id, { data: new File([piece], 'part') }));
    }
    slow.filesPut = 3_000;
    const startedAt = Date.now();
    const first = await openai.uploads.complete(upload.id, { part_ids: parts.map((p) => p.id) }).catch((error: unknown) => error);
    const answeredMs = Date.now() - startedAt;
    expect(first).toMatchObject({ status: 503, code: 'upload_completing', type: 'server_error' });
    expect((first as APIError).headers?.get('retry-after')).toBe('5');
    expect(answeredMs).toBeLessThan(DEADLINE_MS + DEADLINE_GRACE_MS);
    expect(aws.awsCalls.get('Lambda.Invoke')).toBe(1);
    // The client repeats, as the SDK does after Retry-After, until the handed-over join is done.
    let done: Awaited<ReturnType<typeof openai.uploads.complete>> | undefined;
    for (let attempt = 0; attempt < 20 && !done; attempt++) {
      done = await openai.uploads.complete(upload.id, { part_ids: parts.map((p) => p.id) }).catch((error: unknown) => {
        expect(error).toMatchObject({ status: 503 });
        return undefined;
      });
      if (!done) await sleep(500);
    }
    expect(done).toMatchObject({ status: 'completed', file: { bytes: data.length } });
    slow.filesPut = 0;
    expect(await (await openai.files.content(done!.file!.id)).text()).toBe(data);
    expect((await openai.files.list()).data.filter((file) => file.id === done!.file!.id)).toHaveLength(1);
  }, 60_000);

  it('answers 503 request_timeout, in the envelope, for a route still running at its deadline', async () => {
    const target = await uploadFile(openai, await writeJsonl(chatLines(2)));
    slow.filesGet = 5_000;
    const startedAt = Date.now();
    const error = await openai.files.content(target.id).catch((caught: unknown) => caught);
    slow.filesGet = 0;
    expect(error).toMatchObject({ status: 503, code: 'request_timeout', type: 'server_error' });
    expect((error as APIError).headers?.get('retry-after')).toBe('5');
    expect(Date.now() - startedAt).toBeLessThan(DEADLINE_MS + DEADLINE_GRACE_MS + 1_000);
  }, 30_000);
});
