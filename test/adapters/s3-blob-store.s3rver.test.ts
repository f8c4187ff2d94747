// The S3 BlobStore against a real S3 protocol server (s3rver): the same contract as the
// filesystem store, with multipart uploads, ranges, batch deletes and presigned URLs on the wire.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { S3BlobStore } from '../../shared/adapters/aws/s3-blob-store.js';
import { type LocalS3, startLocalS3 } from '../support/s3.js';
import { blobStoreContract, readAll } from './blob-store-contract.js';

blobStoreContract('S3BlobStore on s3rver', async () => {
  const s3 = await startLocalS3();
  // 5 MiB parts (the S3 minimum) so 12 MiB bodies take three parts.
  return {
    store: new S3BlobStore({ client: s3.client, bucket: s3.bucket, partBytes: 5 * 1024 * 1024 }),
    largeBytes: 12 * 1024 * 1024,
    close: s3.close,
  };
});

describe('S3BlobStore on s3rver, beyond the contract', () => {
  let s3: LocalS3;
  beforeAll(async () => {
    s3 = await startLocalS3('batch-extra-bucket');
  });
  afterAll(async () => {
    await s3?.close();
  });

  it('aborts the multipart upload of a failed put', async () => {
    const client = s3.newClient();
    const sent: string[] = [];
    client.middlewareStack.add(
      (next, context) => async (args) => {
        sent.push(context.commandName!);
        return next(args);
      },
      { step: 'initialize' },
    );
    const store = new S3BlobStore({ client, bucket: s3.bucket, partBytes: 5 * 1024 * 1024 });
    async function* broken() {
      yield Buffer.alloc(11 * 1024 * 1024, 1);
      throw new Error('broken source');
    }
    await expect(store.put('broken/object', broken())).rejects.toThrow('broken source');
    // s3rver implements neither ListMultipartUploads nor AbortMultipartUpload (it answers 405, which
    // the store shrugs off: the bucket's lifecycle rule reaps stray uploads), so look at what was sent.
    expect(sent).toEqual(['CreateMultipartUploadCommand', 'UploadPartCommand', 'UploadPartCommand', 'AbortMultipartUploadCommand']);
    expect(await store.size('broken/object')).toBeUndefined();
  });
  it('joins parts of mixed sizes around 5 MiB in parallel, byte for byte', async () => {
    const client = s3.newClient();
    const sent: string[] = [];
    client.middlewareStack.add(
      (next, context) => async (args) => {
        const input = args.input as { PartNumber?: number; ContentLength?: number };
        if (context.commandName === 'UploadPartCommand') sent.push(`${input.PartNumber}:${input.ContentLength}`);
        return next(args);
      },
      { step: 'initialize' },
    );
    const MiB = 1024 * 1024;
    const store = new S3BlobStore({ client, bucket: s3.bucket });
    const sizes = [5 * MiB + 1, 2 * MiB, 3 * MiB, 1, 6 * MiB, 4 * MiB, 700 * 1024];
    const data = sizes.map((size) => randomBytes(size));
    const keys = sizes.map((_, i) => `uploads/mixed/part_${i}`);
    for (const [i, key] of keys.entries()) await store.put(key, data[i]!);
    const all = Buffer.concat(data);
    expect(await store.concat('files/mixed', keys, { sizes })).toEqual({ bytes: all.length });
    expect(sent.sort()).toEqual([`1:${5 * MiB + 1}`, `2:${5 * MiB}`, `3:${6 * MiB + 1}`, `4:${4 * MiB + 700 * 1024}`]);
    const stored = await readAll(await store.get('files/mixed'));
    expect(stored.length).toBe(all.length);
    expect(stored.equals(all)).toBe(true);
  });
  // Paging (ListObjectsV2 continuation) and DeleteObjects batches of 1,000 are asserted in the mock
  // test: s3rver 3.7.1 builds continuation tokens with DES, which Node 20's OpenSSL no longer has.
});
