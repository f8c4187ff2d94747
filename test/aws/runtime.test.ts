// functions/runtime.ts: what the handlers build from the stack's environment.

import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import { buildRuntime } from '../../functions/runtime.js';

const credentials = { accessKeyId: 'x', secretAccessKey: 'x' };
const base = { TABLE_NAME: 'table', BUCKET_NAME: 'bucket' };
const secrets = new SecretsManagerClient({ region: 'us-east-1', credentials });
const secretsMock = mockClient(secrets);

afterEach(() => secretsMock.reset());

describe('buildRuntime', () => {
  it('names what is missing or malformed in the environment', async () => {
    await expect(buildRuntime({ BUCKET_NAME: 'b' }, {})).rejects.toThrow('TABLE_NAME is not set');
    await expect(buildRuntime({ ...base, UPSTREAM_CONFIG: '{nope' }, {})).rejects.toThrow('UPSTREAM_CONFIG is not valid JSON');
    await expect(buildRuntime({ ...base, UPSTREAM_CONFIG: '{"default":{"baseUrl":"ftp://x"}}' }, {})).rejects.toThrow(
      'UPSTREAM_CONFIG: default.baseUrl',
    );
    await expect(
      buildRuntime(
        { ...base, UPSTREAM_CONFIG: '{"routes":{"gpt-*":{"baseUrl":"https://x/v1","apiKey":"sk-inline","apiKeySecret":"s"}}}' },
        {},
      ),
    ).rejects.toThrow('UPSTREAM_CONFIG.routes');
    await expect(buildRuntime({ ...base, MAX_FILE_BYTES: 'lots' }, {})).rejects.toThrow('MAX_FILE_BYTES');
  });

  it('leaves out what a function was not given, and says so when it is used', async () => {
    const rt = await buildRuntime(base, {});
    await expect(rt.queue.enqueue([])).rejects.toThrow('QUEUE_URL is not set');
    await expect(rt.lifecycle.start('batch_1')).rejects.toThrow('STATE_MACHINE_ARN is not set');
  });

  it('routes models by UPSTREAM_CONFIG, reading each key from Secrets Manager once, only for the worker', async () => {
    secretsMock.on(GetSecretValueCommand, { SecretId: 'default-arn' }).resolves({ SecretString: '{"apiKey":"sk-default"}' });
    secretsMock.on(GetSecretValueCommand, { SecretId: 'glm-secret' }).resolves({ SecretString: 'sk-glm\n' });
    const rt = await buildRuntime(
      {
        ...base,
        UPSTREAM_CONFIG: JSON.stringify({
          default: { baseUrl: 'https://api.example.com/v1', apiKeySecret: 'default-arn', maxConcurrency: 300 },
          routes: { 'glm-4*': { baseUrl: 'https://glm.example.com/v4', apiKeySecret: 'glm-secret' } },
        }),
        UPSTREAM_CONCURRENCY: '50',
      },
      { secrets },
    );
    expect(rt.config.upstream).toMatchObject({ baseUrl: 'https://api.example.com/v1', concurrency: 300 });
    // Validation needs no key: it only asks whether a route serves the model.
    expect(rt.domain.steps.upstreams.route('glm-4-plus')).toBeDefined();
    expect(rt.domain.steps.upstreams.route('anything-else')).toBeDefined();
    expect(secretsMock.calls()).toHaveLength(0);

    const { router } = await rt.workerUpstreams();
    await rt.workerUpstreams();
    expect(
      secretsMock
        .commandCalls(GetSecretValueCommand)
        .map((c) => c.args[0].input.SecretId)
        .sort(),
    ).toEqual(['default-arn', 'glm-secret']);
    const status = router.status?.() ?? [];
    expect(status.map((s) => [s.route, s.maxConcurrency])).toEqual([
      ['glm-4*', 50],
      ['default', 300],
    ]);
    await rt.close();
  });
});
