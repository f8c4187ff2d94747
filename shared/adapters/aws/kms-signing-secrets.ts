// The secrets of signed (`id.secret`) keys, encrypted with the stack's KMS key: `npm run keys --
// create --signed` encrypts (with an operator's credentials), the API decrypts (kms:Decrypt on
// that key alone). The key's id is the encryption context, so a ciphertext moved to another id's
// item does not decrypt.
import { DecryptCommand, EncryptCommand, type KMSClient } from '@aws-sdk/client-kms';

export interface KmsSigningSecretsOptions {
  client: KMSClient;
  /** The KMS key's ARN (the stack's SigningKeyArn output; SIGNING_KEY_ARN in the API function). */
  keyId: string;
}

const context = (id: string) => ({ service: 'batch-service', signingKeyId: id });

export class KmsSigningSecrets {
  constructor(private readonly options: KmsSigningSecretsOptions) {}

  /** The secret's base64 ciphertext. */
  async encrypt(id: string, secret: string): Promise<string> {
    const out = await this.options.client.send(
      new EncryptCommand({ KeyId: this.options.keyId, Plaintext: Buffer.from(secret, 'utf8'), EncryptionContext: context(id) }),
    );
    if (!out.CiphertextBlob) throw new Error('KMS answered no ciphertext');
    return Buffer.from(out.CiphertextBlob).toString('base64');
  }

  async decrypt(id: string, ciphertext: string): Promise<string> {
    const out = await this.options.client.send(
      new DecryptCommand({ KeyId: this.options.keyId, CiphertextBlob: Buffer.from(ciphertext, 'base64'), EncryptionContext: context(id) }),
    );
    if (!out.Plaintext) throw new Error('KMS answered no plaintext');
    return Buffer.from(out.Plaintext).toString('utf8');
  }
}
