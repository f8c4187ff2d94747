// `npm run keys`: create, list and revoke API keys in the table, as the API then sees them.
import { DecryptCommand, EncryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { mockClient } from 'aws-sdk-client-mock';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKeysCommand } from '../../functions/keys-cli.js';
import { buildRuntime } from '../../functions/runtime.js';
import { DynamoMetaStore } from '../../shared/adapters/aws/dynamo-meta-store.js';
import { KmsSigningSecrets } from '../../shared/adapters/aws/kms-signing-secrets.js';
import { type EmbeddedDynamo, startEmbeddedDynamo } from '../../shared/adapters/local/embedded-dynamo.js';
import { hashApiKey, storedApiKeys } from '../../shared/api/api-keys.js';
import { createApiApp } from '../../shared/api/app.js';

describe('npm run keys', () => {
  let dynamo: EmbeddedDynamo;
  let meta: DynamoMetaStore;
  let now = 1_800_000_000_000;
  // A stand-in KMS: the ciphertext is the plaintext under its encryption context, which decrypt must repeat.
  const KEY_ARN = 'arn:aws:kms:us-east-1:123456789012:key/signing';
  const kmsClient = new KMSClient({ region: 'us-east-1', credentials: { accessKeyId: 'x', secretAccessKey: 'x' } });
  const kms = mockClient(kmsClient);
  kms.on(EncryptCommand).callsFake(async (input) => ({
    CiphertextBlob: Buffer.from(
      JSON.stringify({ key: input.KeyId, context: input.EncryptionContext, text: Buffer.from(input.Plaintext).toString() }),
    ),
  }));
  kms.on(DecryptCommand).callsFake(async (input) => {
    const sealed = JSON.parse(Buffer.from(input.CiphertextBlob).toString());
    if (sealed.key !== input.KeyId || JSON.stringify(sealed.context) !== JSON.stringify(input.EncryptionContext))
      throw new Error('InvalidCiphertextException');
    return { Plaintext: Buffer.from(sealed.text) };
  });
  const signingSecrets = new KmsSigningSecrets({ client: kmsClient, keyId: KEY_ARN });
  const run = async (...args: string[]) => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runKeysCommand(args, {
      meta,
      now: () => now,
      out: (l) => out.push(l),
      err: (l) => err.push(l),
      encryptSecret: (id, secret) => signingSecrets.encrypt(id, secret),
    });
    return { code, out: out.join('\n'), err: err.join('\n') };
  };

  beforeAll(async () => {
    dynamo = await startEmbeddedDynamo({ tableName: `keys-${process.pid}` });
    meta = new DynamoMetaStore({ client: dynamo.client, tableName: dynamo.tableName });
  });
  afterAll(async () => {
    await dynamo?.close();
  });

  it('creates a key, prints it once, and stores only its hash', async () => {
    const created = await run('create', '--project', 'research');
    expect(created.code).toBe(0);
    expect(created.out).toMatch(/^sk-batch-[A-Za-z0-9]{40}$/);
    expect(created.err).toContain('shown only now');
    const stored = await meta.getApiKey(hashApiKey(created.out));
    expect(stored).toEqual({
      keyHash: hashApiKey(created.out),
      project: 'research',
      prefix: created.out.slice(0, 15),
      createdAtMs: now,
      revokedAtMs: null,
    });
    expect(JSON.stringify(await meta.listApiKeys())).not.toContain(created.out);

    const resolve = storedApiKeys(meta, { clock: { now: () => now } });
    expect(await resolve(created.out)).toBe('research');
    expect(await resolve(`${created.out}x`)).toBeUndefined();
  });

  it('lists keys, by project', async () => {
    const other = await run('create', '--project', 'ops');
    const all = await run('list');
    expect(all.out.split('\n')[0]).toMatch(/^PREFIX\s+PROJECT\s+CREATED\s+REVOKED\s+HASH$/);
    expect(all.out).toContain(other.out.slice(0, 15));
    const ops = await run('list', '--project', 'ops');
    expect(ops.out.split('\n')).toHaveLength(2);
    expect(ops.out).not.toContain('research');
  });

  it('revokes by prefix, by hash or by the key, and the resolver stops accepting it after its cache', async () => {
    const resolve = storedApiKeys(meta, { clock: { now: () => now }, hitTtlMs: 60_000 });
    for (const form of ['prefix', 'hash', 'key'] as const) {
      const key = (await run('create', '--project', `revoke-${form}`)).out;
      expect(await resolve(key)).toBe(`revoke-${form}`);
      const target = form === 'prefix' ? key.slice(0, 15) : form === 'hash' ? hashApiKey(key).slice(0, 12) : key;
      const revoked = await run('revoke', target);
      expect(revoked.code, revoked.err).toBe(0);
      expect(revoked.out).toContain(`revoke-${form}`);
      expect((await meta.getApiKey(hashApiKey(key)))?.revokedAtMs).toBe(now);
      expect(await resolve(key)).toBe(`revoke-${form}`); // cached for up to a minute
      now += 60_001;
      expect(await resolve(key)).toBeUndefined();
    }
    expect((await run('revoke', 'sk-batch-nomatch')).code).toBe(1);
  });

  it('creates a signed id.secret key whose tokens the API verifies with the KMS-encrypted secret, until it is revoked', async () => {
    const created = await run('create', '--project', 'zhipu-team', '--signed');
    expect(created.code, created.err).toBe(0);
    expect(created.out).toMatch(/^[0-9a-f]{32}\.[A-Za-z0-9]{40}$/);
    const [id, secret] = created.out.split('.') as [string, string];
    const stored = await meta.getSigningKey(id);
    expect(stored?.encryptedSecret).toEqual(expect.any(String));
    expect(JSON.stringify(stored)).not.toContain(Buffer.from(secret).toString('base64'));
    expect((await meta.getApiKey(hashApiKey(created.out)))?.project).toBe('zhipu-team');

    // The API Lambda's runtime: SIGNING_KEY_ARN set, the secret decrypted with KMS on first use.
    const rt = await buildRuntime(
      { TABLE_NAME: dynamo.tableName, BUCKET_NAME: 'unused-bucket', SIGNING_KEY_ARN: KEY_ARN },
      { dynamo: dynamo.client, kms: kmsClient },
    );
    const app = createApiApp(
      rt.domain.api(rt.lifecycle, { apiKeys: undefined, resolveApiKey: rt.api.resolveApiKey, signingSecrets: rt.api.signingSecrets! }),
    );
    const token = (payload: Record<string, unknown>) =>
      new SignJWT(payload).setProtectedHeader({ alg: 'HS256', sign_type: 'SIGN' }).sign(new TextEncoder().encode(secret));
    const list = async (bearer: string) => app.request('/api/paas/v4/batches', { headers: { Authorization: `Bearer ${bearer}` } });
    const good = await token({ api_key: id, exp: Date.now() + 180_000, timestamp: Date.now() });
    expect((await list(good)).status).toBe(200);
    expect((await list(created.out)).status).toBe(200);
    const expired = await list(await token({ api_key: id, exp: Date.now() - 1_000, timestamp: Date.now() - 181_000 }));
    expect(expired.status).toBe(401);
    expect(await expired.json()).toMatchObject({ error: { code: '1003' } });
    expect(kms.commandCalls(DecryptCommand)).toHaveLength(1);

    expect((await run('revoke', created.out)).code).toBe(0);
    const fresh = await buildRuntime(
      { TABLE_NAME: dynamo.tableName, BUCKET_NAME: 'unused-bucket', SIGNING_KEY_ARN: KEY_ARN },
      { dynamo: dynamo.client, kms: kmsClient },
    );
    const after = createApiApp(
      fresh.domain.api(fresh.lifecycle, {
        apiKeys: undefined,
        resolveApiKey: fresh.api.resolveApiKey,
        signingSecrets: fresh.api.signingSecrets!,
      }),
    );
    const refused = await after.request('/api/paas/v4/batches', { headers: { Authorization: `Bearer ${good}` } });
    expect(refused.status).toBe(401);
    await Promise.all([rt.close(), fresh.close()]);
  });

  it('refuses --signed without the stack KMS key', async () => {
    const err: string[] = [];
    const code = await runKeysCommand(['create', '--project', 'p', '--signed'], {
      meta,
      now: () => now,
      out: () => undefined,
      err: (l) => err.push(l),
    });
    expect(code).toBe(2);
    expect(err.join('\n')).toContain('SIGNING_KEY_ARN');
  });

  it('explains its usage', async () => {
    expect((await run()).code).toBe(2);
    expect((await run('create')).err).toContain('--project');
    expect((await run('create', '--project', 'bad name!')).code).toBe(2);
    expect((await run('frobnicate')).err).toContain("unknown command 'frobnicate'");
    expect((await run('--help')).code).toBe(0);
  });
});
