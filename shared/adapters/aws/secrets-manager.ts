// Upstream API keys named by Secrets Manager secret (apiKeySecret in the routes), read once per
// container and never logged. A secret holds the key as plain text, or JSON with an `apiKey`
// (or `api_key`, `key`) field.
import { GetSecretValueCommand, type SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { SecretResolver } from '../../upstream/routes.js';

/** A SecretResolver over Secrets Manager that asks once per secret (a failed read is asked again next time). */
export function secretsManagerResolver(client: SecretsManagerClient): SecretResolver & ((secretId: string) => Promise<string | undefined>) {
  const cache = new Map<string, Promise<string | undefined>>();
  return (secretId) => {
    let value = cache.get(secretId);
    if (!value) {
      value = client.send(new GetSecretValueCommand({ SecretId: secretId })).then((out) => keyFromSecret(out.SecretString));
      value.catch(() => cache.delete(secretId));
      cache.set(secretId, value);
    }
    return value;
  };
}

export function keyFromSecret(text: string | undefined): string | undefined {
  const trimmed = text?.trim();
  if (!trimmed) return undefined;
  if (trimmed.startsWith('{')) {
    try {
      const json = JSON.parse(trimmed) as Record<string, unknown>;
      const key = json.apiKey ?? json.api_key ?? json.key;
      if (typeof key === 'string' && key) return key;
    } catch {
      // Not JSON after all: the whole text is the key.
    }
  }
  return trimmed;
}
