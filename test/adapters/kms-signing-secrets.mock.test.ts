// The exact KMS calls of the signing secrets: the stack's key, the key id as encryption context.
import { DecryptCommand, EncryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { mockClient } from 'aws-sdk-client-mock';
import { beforeEach, describe, expect, it } from 'vitest';
import { KmsSigningSecrets } from '../../shared/adapters/aws/kms-signing-secrets.js';

const KEY_ARN = 'arn:aws:kms:us-east-1:123456789012:key/1111-2222';
const client = new KMSClient({ region: 'us-east-1', credentials: { accessKeyId: 'x', secretAccessKey: 'x' } });
const kms = mockClient(client);
const secrets = new KmsSigningSecrets({ client, keyId: KEY_ARN });

beforeEach(() => kms.reset());

describe('KmsSigningSecrets', () => {
  it('encrypts with the stack key, bound to the key id', async () => {
    kms.on(EncryptCommand).resolves({ CiphertextBlob: Buffer.from('cipher') });
    expect(await secrets.encrypt('abc', 's3cret')).toBe(Buffer.from('cipher').toString('base64'));
    const input = kms.commandCalls(EncryptCommand)[0]!.args[0].input;
    expect(input).toEqual({
      KeyId: KEY_ARN,
      Plaintext: Buffer.from('s3cret'),
      EncryptionContext: { service: 'batch-service', signingKeyId: 'abc' },
    });
  });

  it('decrypts with the same key and context', async () => {
    kms.on(DecryptCommand).resolves({ Plaintext: Buffer.from('s3cret') });
    expect(await secrets.decrypt('abc', Buffer.from('cipher').toString('base64'))).toBe('s3cret');
    expect(kms.commandCalls(DecryptCommand)[0]!.args[0].input).toEqual({
      KeyId: KEY_ARN,
      CiphertextBlob: Buffer.from('cipher'),
      EncryptionContext: { service: 'batch-service', signingKeyId: 'abc' },
    });
  });

  it('fails when KMS refuses (another context, a revoked grant)', async () => {
    kms.on(DecryptCommand).rejects(Object.assign(new Error('denied'), { name: 'InvalidCiphertextException' }));
    await expect(secrets.decrypt('abc', 'eA==')).rejects.toThrow('denied');
  });
});
