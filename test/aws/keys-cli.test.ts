// `npm run keys`: create, list and revoke API keys in the table, as the API then sees them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKeysCommand } from '../../functions/keys-cli.js';
import { DynamoMetaStore } from '../../shared/adapters/aws/dynamo-meta-store.js';
import { type EmbeddedDynamo, startEmbeddedDynamo } from '../../shared/adapters/local/embedded-dynamo.js';
import { hashApiKey, storedApiKeys } from '../../shared/api/api-keys.js';

describe('npm run keys', () => {
  let dynamo: EmbeddedDynamo;
  let meta: DynamoMetaStore;
  let now = 1_800_000_000_000;
  const run = async (...args: string[]) => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runKeysCommand(args, { meta, now: () => now, out: (l) => out.push(l), err: (l) => err.push(l) });
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

  it('explains its usage', async () => {
    expect((await run()).code).toBe(2);
    expect((await run('create')).err).toContain('--project');
    expect((await run('create', '--project', 'bad name!')).code).toBe(2);
    expect((await run('frobnicate')).err).toContain("unknown command 'frobnicate'");
    expect((await run('--help')).code).toBe(0);
  });
});
