// `npm run keys -- create --project NAME [--signed] | list [--project NAME] | revoke KEY_PREFIX_OR_HASH
// [--table TABLE] [--region REGION] [--kms-key ARN]`: manages the API keys of a deployed service,
// with the caller's AWS credentials, directly in its DynamoDB table (TABLE_NAME, or --table: the
// stack's TableName output). A new key is printed once; only its SHA-256 is stored. A signed key
// (`--signed`, Zhipu-style `id.secret`) also stores its secret encrypted with the stack's KMS key
// (SIGNING_KEY_ARN, or --kms-key: the SigningKeyArn output), so the API can verify signed tokens.

import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { KMSClient } from '@aws-sdk/client-kms';
import { DynamoMetaStore } from '../shared/adapters/aws/dynamo-meta-store.js';
import { KmsSigningSecrets } from '../shared/adapters/aws/kms-signing-secrets.js';
import { apiKeyRecord, newApiKey } from '../shared/api/api-keys.js';
import { newSignedApiKey, SIGNED_API_KEY_SHAPE } from '../shared/api/signed-tokens.js';
import type { ApiKeyRecord } from '../shared/batch/model.js';
import type { MetaStore } from '../shared/ports.js';

export const USAGE = `usage:
  npm run keys -- create --project NAME     make a key for a project; it is shown once
  npm run keys -- create --project NAME --signed
                                            a Zhipu-style id.secret key, which also signs tokens
  npm run keys -- list [--project NAME]     keys (prefix, project, created, revoked)
  npm run keys -- revoke KEY_PREFIX_OR_HASH revoke one key, named by its shown prefix, its hash, or the key
options: --table TABLE (default $TABLE_NAME: the stack's TableName output), --region REGION,
  --kms-key ARN (default $SIGNING_KEY_ARN: the stack's SigningKeyArn output; for --signed)`;

export interface KeysCliIo {
  meta: Pick<MetaStore, 'putApiKey' | 'listApiKeys' | 'revokeApiKey' | 'putSigningKey'>;
  /** Encrypts a signed key's secret (KMS, with the stack's key); unset: --signed is refused. */
  encryptSecret?: (id: string, secret: string) => Promise<string>;
  now: () => number;
  out: (line: string) => void;
  err: (line: string) => void;
}

const PROJECT = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

const KEYS_CLI_ARGS = {
  allowPositionals: true,
  options: {
    project: { type: 'string' },
    table: { type: 'string' },
    region: { type: 'string' },
    'kms-key': { type: 'string' },
    signed: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  },
} as const;

/** Runs one command; returns the process exit code. */
export async function runKeysCommand(args: string[], io: KeysCliIo): Promise<number> {
  let parsed: ReturnType<typeof parseArgs<typeof KEYS_CLI_ARGS>>;
  try {
    parsed = parseArgs({ args, ...KEYS_CLI_ARGS });
  } catch (error) {
    io.err(`${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  const [command, target, ...extra] = parsed.positionals;
  const { project } = parsed.values;
  if (parsed.values.help || !command) {
    (parsed.values.help ? io.out : io.err)(USAGE);
    return parsed.values.help ? 0 : 2;
  }

  switch (command) {
    case 'create': {
      if (!project || !PROJECT.test(project) || target !== undefined) {
        io.err(`create needs --project NAME (letters, digits, _ . -; at most 64)\n${USAGE}`);
        return 2;
      }
      if (parsed.values.signed) {
        if (!io.encryptSecret) {
          io.err(`create --signed needs the stack's KMS key: set SIGNING_KEY_ARN or pass --kms-key (the SigningKeyArn output)\n${USAGE}`);
          return 2;
        }
        const signed = newSignedApiKey();
        // The secret first: a key whose record exists must be able to verify its tokens.
        await io.meta.putSigningKey({
          id: signed.id,
          encryptedSecret: await io.encryptSecret(signed.id, signed.secret),
          createdAtMs: io.now(),
        });
        await io.meta.putApiKey(apiKeyRecord(signed.key, project, io.now()));
        io.out(signed.key);
        io.err(`Created a signed key for the project '${project}'. It is shown only now: keep it in a secret store.`);
        return 0;
      }
      const key = newApiKey();
      await io.meta.putApiKey(apiKeyRecord(key, project, io.now()));
      io.out(key);
      io.err(`Created a key for the project '${project}'. It is shown only now: keep it in a secret store.`);
      return 0;
    }
    case 'list': {
      if (target !== undefined) {
        io.err(USAGE);
        return 2;
      }
      const keys = await io.meta.listApiKeys(project);
      io.out(table(keys));
      return 0;
    }
    case 'revoke': {
      if (!target || extra.length > 0) {
        io.err(`revoke needs one key prefix, key hash or key\n${USAGE}`);
        return 2;
      }
      const candidates = (await io.meta.listApiKeys(project)).filter((key) => matches(key, target));
      const active = candidates.filter((key) => key.revokedAtMs === null);
      if (candidates.length === 0) {
        io.err(`No key matches '${target}'. See: npm run keys -- list`);
        return 1;
      }
      if (active.length === 0) {
        io.err(`The key '${target}' is already revoked.`);
        return 0;
      }
      if (active.length > 1) {
        io.err(`'${target}' matches ${active.length} keys; give more of the prefix, or the hash:\n${table(active)}`);
        return 1;
      }
      const revoked = await io.meta.revokeApiKey(active[0]!.keyHash, io.now());
      io.out(`revoked ${revoked?.prefix ?? target}… of the project '${revoked?.project ?? active[0]!.project}'`);
      io.err('The API stops accepting it within a minute (its containers remember keys that briefly).');
      return 0;
    }
    default:
      io.err(`unknown command '${command}'\n${USAGE}`);
      return 2;
  }
}

function matches(key: ApiKeyRecord, target: string): boolean {
  const t = target.replace(/…$/, '');
  // The whole key: compare its hash; a hash (or its start); a shown prefix (or its start).
  if ((t.startsWith('sk-batch-') || SIGNED_API_KEY_SHAPE.test(t)) && t.length > key.prefix.length)
    return apiKeyRecord(t, key.project, 0).keyHash === key.keyHash;
  if (/^[0-9a-f]{8,64}$/.test(t) && key.keyHash.startsWith(t)) return true;
  return t.length >= 'sk-batch-'.length + 2 && key.prefix.startsWith(t);
}

function table(keys: ApiKeyRecord[]): string {
  const rows = [['PREFIX', 'PROJECT', 'CREATED', 'REVOKED', 'HASH']];
  for (const key of keys) {
    rows.push([
      `${key.prefix}…`,
      key.project,
      new Date(key.createdAtMs).toISOString(),
      key.revokedAtMs === null ? '-' : new Date(key.revokedAtMs).toISOString(),
      key.keyHash.slice(0, 16),
    ]);
  }
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  return rows
    .map((row) =>
      row
        .map((cell, column) => cell.padEnd(widths[column]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const { values } = parseArgs({
    args,
    allowPositionals: true,
    strict: false,
    options: { table: { type: 'string' }, region: { type: 'string' }, 'kms-key': { type: 'string' } },
  });
  const kmsKey = (values['kms-key'] as string | undefined) ?? process.env.SIGNING_KEY_ARN;
  const tableName = (values.table as string | undefined) ?? process.env.TABLE_NAME;
  if (!tableName && !args.includes('--help') && !args.includes('-h') && args.length > 0) {
    console.error(`Set TABLE_NAME or pass --table (the stack's TableName output).\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  const region = values.region ? { region: values.region as string } : {};
  const client = new DynamoDBClient(region);
  const kmsClient = kmsKey ? new KMSClient(region) : undefined;
  const kms = kmsClient && kmsKey ? new KmsSigningSecrets({ client: kmsClient, keyId: kmsKey }) : undefined;
  try {
    process.exitCode = await runKeysCommand(args, {
      meta: new DynamoMetaStore({ client, tableName: tableName ?? 'unset' }),
      ...(kms ? { encryptSecret: (id: string, secret: string) => kms.encrypt(id, secret) } : {}),
      now: Date.now,
      out: (line) => console.log(line),
      err: (line) => console.error(line),
    });
  } catch (error) {
    console.error(`keys: ${(error as Error).name}: ${(error as Error).message}`);
    process.exitCode = 1;
  } finally {
    client.destroy();
    kmsClient?.destroy();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
