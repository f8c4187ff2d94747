// The exact S3 calls S3BlobStore sends.
import { Readable } from 'node:stream';
import { describe, it, expect, beforeEach } from 'vitest';
import { mockClient } from 'aws-sdk-client-mock';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  NoSuchKey,
  NotFound,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { S3BlobStore } from '../../shared/adapters/aws/s3-blob-store.js';
import { BlobNotFoundError } from '../../shared/ports.js';
import { readAll } from './blob-store-contract.js';

const BUCKET = 'blob-bucket';
const MiB = 1024 * 1024;
const s3 = mockClient(S3Client);
const client = new S3Client({ region: 'us-east-1', credentials: { accessKeyId: 'x', secretAccessKey: 'x' } });
const store = new S3BlobStore({ client, bucket: BUCKET, partBytes: 5 * MiB, partConcurrency: 2 });

// The SDK's Body is a Readable with extra helpers; the store only iterates it.
const body = (text: string | Buffer) => Readable.from([Buffer.from(text)]) as never;
async function* pieces(total: number, size: number) {
  for (let sent = 0; sent < total; sent += size) yield Buffer.alloc(Math.min(size, total - sent), 7);
}

beforeEach(() => {
  s3.reset();
});

describe('put', () => {
  it('sends a small body as one PutObject', async () => {
    s3.on(PutObjectCommand).resolves({});
    expect(await store.put('files/a', 'hello')).toEqual({ bytes: 5 });
    const calls = s3.commandCalls(PutObjectCommand);
    expect(calls).toHaveLength(1);
    expect(calls[0]!.args[0].input).toMatchObject({ Bucket: BUCKET, Key: 'files/a', ContentLength: 5 });
    expect(Buffer.from(calls[0]!.args[0].input.Body as Uint8Array).toString()).toBe('hello');
  });

  it('sends a stream that ends within one part as one PutObject', async () => {
    s3.on(PutObjectCommand).resolves({});
    expect(await store.put('files/b', pieces(3 * MiB, 64 * 1024))).toEqual({ bytes: 3 * MiB });
    expect(s3.commandCalls(PutObjectCommand)).toHaveLength(1);
    expect(s3.commandCalls(CreateMultipartUploadCommand)).toHaveLength(0);
  });

  it('sends a large stream as a multipart upload of full parts, completed in order', async () => {
    s3.on(CreateMultipartUploadCommand).resolves({ UploadId: 'up-1' });
    s3.on(UploadPartCommand).callsFake(async (input) => {
      // Later parts finish first: Complete must still list them in order.
      await new Promise((resolve) => setTimeout(resolve, 20 - input.PartNumber * 5));
      return { ETag: `"etag-${input.PartNumber}"`, ...(input.PartNumber === 2 ? { ChecksumCRC32: 'crc-2' } : {}) };
    });
    s3.on(CompleteMultipartUploadCommand).resolves({});

    expect(await store.put('files/c', pieces(12 * MiB + 5, 1 * MiB + 3))).toEqual({ bytes: 12 * MiB + 5 });

    expect(s3.commandCalls(CreateMultipartUploadCommand)[0]!.args[0].input).toEqual({ Bucket: BUCKET, Key: 'files/c' });
    const parts = s3.commandCalls(UploadPartCommand).map((call) => call.args[0].input);
    expect(parts.map((p) => [p.PartNumber, p.ContentLength, p.UploadId, p.Key])).toEqual([
      [1, 5 * MiB, 'up-1', 'files/c'],
      [2, 5 * MiB, 'up-1', 'files/c'],
      [3, 2 * MiB + 5, 'up-1', 'files/c'],
    ]);
    expect(s3.commandCalls(CompleteMultipartUploadCommand)[0]!.args[0].input).toEqual({
      Bucket: BUCKET,
      Key: 'files/c',
      UploadId: 'up-1',
      MultipartUpload: { Parts: [1, 2, 3].map((n) => ({ PartNumber: n, ETag: `"etag-${n}"`, ...(n === 2 ? { ChecksumCRC32: 'crc-2' } : {}) })) },
    });
    expect(s3.commandCalls(PutObjectCommand)).toHaveLength(0);
  });

  it('aborts the multipart upload when a part fails', async () => {
    s3.on(CreateMultipartUploadCommand).resolves({ UploadId: 'up-2' });
    s3.on(UploadPartCommand).resolvesOnce({ ETag: '"1"' }).rejects(new Error('connection reset'));
    s3.on(AbortMultipartUploadCommand).resolves({});
    await expect(store.put('files/d', pieces(20 * MiB, MiB))).rejects.toThrow('connection reset');
    expect(s3.commandCalls(AbortMultipartUploadCommand)[0]!.args[0].input).toEqual({ Bucket: BUCKET, Key: 'files/d', UploadId: 'up-2' });
    expect(s3.commandCalls(CompleteMultipartUploadCommand)).toHaveLength(0);
  });
});

describe('get and size', () => {
  it('asks for an inclusive HTTP range', async () => {
    s3.on(GetObjectCommand).resolves({ Body: body('3456') });
    expect((await readAll(await store.get('files/a', { start: 3, end: 7 }))).toString()).toBe('3456');
    expect(s3.commandCalls(GetObjectCommand)[0]!.args[0].input).toEqual({ Bucket: BUCKET, Key: 'files/a', Range: 'bytes=3-6' });
  });

  it('turns NoSuchKey into BlobNotFoundError', async () => {
    s3.on(GetObjectCommand).rejects(new NoSuchKey({ message: 'no such key', $metadata: {} }));
    await expect(store.get('files/missing')).rejects.toBeInstanceOf(BlobNotFoundError);
  });

  it('answers an unsatisfiable range with no bytes', async () => {
    s3.on(GetObjectCommand).rejects(new S3ServiceException({ name: 'InvalidRange', $fault: 'client', $metadata: { httpStatusCode: 416 } }));
    expect((await readAll(await store.get('files/a', { start: 100, end: 200 }))).length).toBe(0);
  });

  it('reads the size with HeadObject; a 404 is undefined', async () => {
    s3.on(HeadObjectCommand, { Key: 'files/a' }).resolves({ ContentLength: 42 });
    s3.on(HeadObjectCommand, { Key: 'files/b' }).rejects(new NotFound({ message: 'Not Found', $metadata: { httpStatusCode: 404 } }));
    expect(await store.size('files/a')).toBe(42);
    expect(await store.size('files/b')).toBeUndefined();
  });

  it('does not mistake another failure for a missing object', async () => {
    s3.on(HeadObjectCommand).rejects(new S3ServiceException({ name: 'AccessDenied', $fault: 'client', $metadata: { httpStatusCode: 403 } }));
    await expect(store.size('files/a')).rejects.toThrow();
  });
});

describe('concat', () => {
  it('reads the parts in order and writes one small object', async () => {
    s3.on(GetObjectCommand, { Key: 'p/1' }).resolves({ Body: body('one\n') });
    s3.on(GetObjectCommand, { Key: 'p/2' }).resolves({ Body: body('two\n') });
    s3.on(PutObjectCommand).resolves({});
    expect(await store.concat('files/joined', ['p/2', 'p/1'])).toEqual({ bytes: 8 });
    expect(s3.commandCalls(GetObjectCommand).map((c) => c.args[0].input.Key)).toEqual(['p/2', 'p/1']);
    const put = s3.commandCalls(PutObjectCommand)[0]!.args[0].input;
    expect(put.Key).toBe('files/joined');
    expect(Buffer.from(put.Body as Uint8Array).toString()).toBe('two\none\n');
  });

  it('fails with BlobNotFoundError on a missing part and writes nothing', async () => {
    s3.on(GetObjectCommand, { Key: 'p/1' }).resolves({ Body: body('one\n') });
    s3.on(GetObjectCommand, { Key: 'p/2' }).rejects(new NoSuchKey({ message: 'no such key', $metadata: {} }));
    await expect(store.concat('files/joined', ['p/1', 'p/2'])).rejects.toBeInstanceOf(BlobNotFoundError);
    expect(s3.commandCalls(PutObjectCommand)).toHaveLength(0);
  });
});

describe('delete and list', () => {
  it('deletes in DeleteObjects batches of 1,000, quietly', async () => {
    s3.on(DeleteObjectsCommand).resolves({});
    const keys = Array.from({ length: 2_001 }, (_, i) => `k/${i}`);
    await store.delete(keys);
    const calls = s3.commandCalls(DeleteObjectsCommand).map((c) => c.args[0].input);
    expect(calls.map((c) => c.Delete!.Objects!.length)).toEqual([1_000, 1_000, 1]);
    expect(calls[0]).toMatchObject({ Bucket: BUCKET, Delete: { Quiet: true } });
    expect(calls[2]!.Delete!.Objects).toEqual([{ Key: 'k/2000' }]);
  });

  it('sends nothing for no keys and reports keys S3 could not delete', async () => {
    await store.delete([]);
    expect(s3.calls()).toHaveLength(0);
    s3.on(DeleteObjectsCommand).resolves({ Errors: [{ Key: 'k/1', Code: 'AccessDenied' }] });
    await expect(store.delete(['k/1'])).rejects.toThrow('AccessDenied');
  });

  it('pages through ListObjectsV2', async () => {
    s3.on(ListObjectsV2Command)
      .resolvesOnce({ Contents: [{ Key: 'b/1' }, { Key: 'b/2' }], IsTruncated: true, NextContinuationToken: 't1' })
      .resolvesOnce({ Contents: [{ Key: 'b/3' }], IsTruncated: false });
    expect(await store.list('b/')).toEqual(['b/1', 'b/2', 'b/3']);
    expect(s3.commandCalls(ListObjectsV2Command).map((c) => c.args[0].input)).toEqual([
      { Bucket: BUCKET, Prefix: 'b/', ContinuationToken: undefined },
      { Bucket: BUCKET, Prefix: 'b/', ContinuationToken: 't1' },
    ]);
  });
});

describe('presignGet', () => {
  it('signs a GetObject with the download name and expiry, without calling S3', async () => {
    const url = new URL(await store.presignGet('files/out', { expiresInSeconds: 300, filename: 'batch_1 "x".jsonl' }));
    expect(url.pathname).toContain('files/out');
    expect(url.searchParams.get('X-Amz-Expires')).toBe('300');
    expect(url.searchParams.get('response-content-disposition')).toBe('attachment; filename="batch_1 _x_.jsonl"');
    expect(s3.calls()).toHaveLength(0);
  });
});
