// The Zhipu seed (zhipu-glm-batch-api.txt) as the zhipuai SDK sends it, against /api/paas/v4: its
// exact HTTP calls (the SDK's base URL, multipart upload, create with auto_delete_input_file,
// retrieve, content, file delete) with the raw key and with the SDK's signed token (a JWT made
// with jose as the SDK makes it with PyJWT).
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';

const REVIEWS = fileURLToPath(new URL('../fixtures/product_reviews.jsonl', import.meta.url));
const KEY = 'a3f1c2d4e5b6a7980123456789abcdef.Zq8sKf3LmN0pRtUvWxYz1234';

/**
 * The token the zhipuai SDK signs with token caching on (core/_jwt_token.py): HS256 over the
 * secret half of `id.secret`, header `sign_type: SIGN`, payload api_key, exp and timestamp in ms.
 */
async function zhipuToken(apiKey: string, options: { ttlMs?: number; nowMs?: number; alg?: string } = {}) {
  const [id, secret] = apiKey.split('.') as [string, string];
  const now = options.nowMs ?? Date.now();
  return new SignJWT({ api_key: id, exp: now + (options.ttlMs ?? 180_000), timestamp: now })
    .setProtectedHeader({ alg: options.alg ?? 'HS256', sign_type: 'SIGN' })
    .sign(new TextEncoder().encode(secret));
}

/** The zhipuai SDK's requests: `Authorization: Bearer <key or token>`, JSON bodies, paths under the base URL. */
function zhipuClient(baseUrl: string, auth: () => Promise<string> | string) {
  const headers = async (extra: Record<string, string> = {}) => ({ Authorization: `Bearer ${await auth()}`, ...extra });
  return {
    async call(method: string, path: string, body?: unknown) {
      const response = await fetch(`${baseUrl}${path}`, {
        method,
        headers: await headers(body === undefined ? {} : { 'Content-Type': 'application/json' }),
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      return { status: response.status, body: (await response.text()) as string };
    },
    async json(method: string, path: string, body?: unknown) {
      const { status, body: text } = await this.call(method, path, body);
      return { status, body: JSON.parse(text) };
    },
    async upload(filename: string, bytes: Buffer) {
      const form = new FormData();
      form.append('purpose', 'batch');
      form.append('file', new Blob([new Uint8Array(bytes)]), filename);
      const response = await fetch(`${baseUrl}/files`, { method: 'POST', headers: await headers(), body: form });
      return { status: response.status, body: await response.json() };
    },
  };
}

async function runZhipuSeed(api: ReturnType<typeof zhipuClient>) {
  const upload = await api.upload('product_reviews.jsonl', await readFile(REVIEWS));
  expect(upload.status).toBe(200);
  // client.batches.create(...): the newest SDK always sends auto_delete_input_file (default True).
  const create = await api.json('POST', '/batches', {
    completion_window: '24h',
    endpoint: '/v4/chat/completions',
    input_file_id: upload.body.id,
    metadata: { description: 'Sentiment classification' },
    auto_delete_input_file: true,
  });
  expect(create.status).toBe(200);
  let batch = create.body;
  while (!['completed', 'failed', 'expired', 'cancelled'].includes(batch.status)) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    batch = (await api.json('GET', `/batches/${batch.id}`)).body;
  }
  const content = await api.call('GET', `/files/${batch.output_file_id}/content`);
  return {
    inputFileId: upload.body.id as string,
    batch,
    lines: content.body
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line)),
  };
}

describe('the Zhipu seed against /api/paas/v4', () => {
  let upstream: UpstreamSim;
  let service: ServiceProcess;

  beforeAll(async () => {
    upstream = await startUpstreamSim();
    service = await startServiceProcess({
      env: { UPSTREAM_BASE_URL: upstream.baseURL, API_KEYS: `${KEY}:zhipu,other-key:other,looks.like.atoken:dotted` },
    });
  });
  afterAll(async () => {
    await service?.removeDataDir();
    await upstream?.close();
  });

  it('runs the tutorial with the raw key, and deletes the input file once the batch is final', async () => {
    const api = zhipuClient(`${service.origin}/api/paas/v4`, () => KEY);
    const { inputFileId, batch, lines } = await runZhipuSeed(api);
    expect(batch).toMatchObject({
      status: 'completed',
      endpoint: '/v4/chat/completions',
      request_counts: { total: 10, completed: 10, failed: 0 },
    });
    expect(lines.map((line) => line.custom_id).sort()).toEqual(Array.from({ length: 10 }, (_, i) => `request-${i + 1}`).sort());
    expect(lines[0].response.status_code).toBe(200);
    expect((await api.json('GET', `/files/${inputFileId}`)).status).toBe(404);
    // client.files.delete of an already deleted file: 404 in the envelope.
    const again = await api.json('DELETE', `/files/${inputFileId}`);
    expect(again).toMatchObject({ status: 404, body: { error: { code: 'not_found' } } });
  });

  it('runs the tutorial with the signed token the SDK sends when token caching is on', async () => {
    const api = zhipuClient(`${service.origin}/api/paas/v4`, () => zhipuToken(KEY));
    const { batch, lines } = await runZhipuSeed(api);
    expect(batch).toMatchObject({ status: 'completed', request_counts: { total: 10, completed: 10 } });
    expect(lines).toHaveLength(10);
    // The batch belongs to the key's project: the raw key sees it, another project's key does not.
    expect((await zhipuClient(`${service.origin}/v4`, () => KEY).json('GET', `/batches/${batch.id}`)).status).toBe(200);
    expect((await zhipuClient(`${service.origin}/v4`, () => 'other-key').json('GET', `/batches/${batch.id}`)).status).toBe(404);
  });

  it('refuses expired, badly signed and unknown tokens with 401 and Zhipu codes', async () => {
    const at = (auth: () => Promise<string> | string, base = '/api/paas/v4') =>
      zhipuClient(`${service.origin}${base}`, auth).json('GET', '/batches');
    const [id] = KEY.split('.') as [string];
    const expectRefusal = async (auth: () => Promise<string> | string, code: string, base?: string) => {
      const answer = await at(auth, base);
      expect(answer.status).toBe(401);
      expect(answer.body.error).toMatchObject({ code, message: expect.any(String) });
      expect(JSON.stringify(answer.body)).not.toContain(KEY.split('.')[1]);
    };
    await expectRefusal(() => zhipuToken(KEY, { nowMs: Date.now() - 600_000 }), '1003');
    await expectRefusal(() => zhipuToken(`${id}.not-the-secret-at-all`), '1002');
    await expectRefusal(() => zhipuToken('ffffffffffffffffffffffffffffffff.Zq8sKf3LmN0pRtUvWxYz1234'), '1002');
    await expectRefusal(() => zhipuToken(KEY, { alg: 'HS512' }), '1002');
    await expectRefusal(
      () =>
        new SignJWT({ api_key: id, exp: Math.floor(Date.now() / 1000) - 60, timestamp: Date.now() })
          .setProtectedHeader({ alg: 'HS256', sign_type: 'SIGN' })
          .sign(new TextEncoder().encode(KEY.split('.')[1])),
      '1003',
    );
    await expectRefusal(() => 'a.b.c', '1002');
    // A key of API_KEYS shaped like a token is still that key.
    expect((await at(() => 'looks.like.atoken')).status).toBe(200);
    await expectRefusal(() => '', '1001');
    await expectRefusal(() => 'unknown-key', '1000');
    // Under /v1 the same refusals carry OpenAI's codes, and a good token works there too.
    await expectRefusal(() => zhipuToken(KEY, { nowMs: Date.now() - 600_000 }), 'token_expired', '/v1');
    expect((await at(() => zhipuToken(KEY), '/v1')).status).toBe(200);
  });

  it('keeps the input file when auto_delete_input_file is false, and refuses a non-boolean', async () => {
    const api = zhipuClient(`${service.origin}/v4`, () => KEY);
    const upload = await api.upload('product_reviews.jsonl', await readFile(REVIEWS));
    const body = { completion_window: '24h', endpoint: '/v4/chat/completions', input_file_id: upload.body.id };
    const refused = await api.json('POST', '/batches', { ...body, auto_delete_input_file: 'yes' });
    expect(refused).toMatchObject({ status: 400, body: { error: { param: 'auto_delete_input_file' } } });
    let batch = (await api.json('POST', '/batches', { ...body, auto_delete_input_file: false })).body;
    while (batch.status !== 'completed') {
      await new Promise((resolve) => setTimeout(resolve, 100));
      batch = (await api.json('GET', `/batches/${batch.id}`)).body;
    }
    expect((await api.json('GET', `/files/${upload.body.id}`)).status).toBe(200);
  });
});
