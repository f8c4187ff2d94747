// The exact S3 calls S3BlobStore sends.
import { Readable } from 'node:stream';
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
import { mockClient } from 'aws-sdk-client-mock';
import { beforeEach, describe, expect, it } from 'vitest';
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

    // The SDK sends every part with a CRC32 checksum by default: the create names it, or S3 refuses the parts.
    expect(s3.commandCalls(CreateMultipartUploadCommand)[0]!.args[0].input).toEqual({
      Bucket: BUCKET,
      Key: 'files/c',
      ChecksumAlgorithm: 'CRC32',
    });
    const parts = s3.commandCalls(UploadPartCommand).map((call) => call.args[0].input);
    expect(parts.map((p) => [p.PartNumber, p.ContentLength, p.UploadId, p.Key, p.ChecksumAlgorithm])).toEqual([
      [1, 5 * MiB, 'up-1', 'files/c', 'CRC32'],
      [2, 5 * MiB, 'up-1', 'files/c', 'CRC32'],
      [3, 2 * MiB + 5, 'up-1', 'files/c', 'CRC32'],
    ]);
    expect(s3.commandCalls(CompleteMultipartUploadCommand)[0]!.args[0].input).toEqual({
      Bucket: BUCKET,
      Key: 'files/c',
      UploadId: 'up-1',
      MultipartUpload: {
        Parts: [1, 2, 3].map((n) => ({ PartNumber: n, ETag: `"etag-${n}"`, ...(n === 2 ? { ChecksumCRC32: 'crc-2' } : {}) })),
      },
    });
    expect(s3.commandCalls(PutObjectCommand)).toHaveLength(0);
  });

  it('names no checksum algorithm for a client that sends checksums only when required (S3-compatible servers)', async () => {
    const compatible = new S3Client({
      region: 'us-east-1',
      credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
      requestChecksumCalculation: 'WHEN_REQUIRED',
    });
    s3.on(CreateMultipartUploadCommand).resolves({ UploadId: 'up-3' });
    s3.on(UploadPartCommand).callsFake(async (input) => ({ ETag: `"${input.PartNumber}"` }));
    s3.on(CompleteMultipartUploadCommand).resolves({});
    const parts = Array.from({ length: 3 }, (_, i) => `uploads/u/part-${i}`);
    s3.on(GetObjectCommand).callsFake(async () => ({ Body: Readable.from([Buffer.alloc(3 * MiB, 1)]) }));
    const plain = new S3BlobStore({ client: compatible, bucket: BUCKET, partBytes: 5 * MiB });
    await plain.put('files/e', pieces(11 * MiB, MiB));
    await plain.concat('files/f', parts, { sizes: parts.map(() => 3 * MiB) });
    for (const call of s3.commandCalls(CreateMultipartUploadCommand)) expect(call.args[0].input).not.toHaveProperty('ChecksumAlgorithm');
    for (const call of s3.commandCalls(UploadPartCommand)) expect(call.args[0].input.ChecksumAlgorithm).toBeUndefined();
    expect(s3.commandCalls(CreateMultipartUploadCommand)).toHaveLength(2);
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
    s3.on(HeadObjectCommand).rejects(
      new S3ServiceException({ name: 'AccessDenied', $fault: 'client', $metadata: { httpStatusCode: 403 } }),
    );
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

describe('concat of parts of known sizes', () => {
  const joiner = new S3BlobStore({ client, bucket: BUCKET, partBytes: 5 * MiB, concatConcurrency: 3 });
  const objects = new Map<string, Buffer>();
  /** The bodies UploadPart received, by part number, and how many were in flight at most. */
  let received: Map<number, Buffer>;
  let inFlight: number;
  let mostInFlight: number;

  const store = (sizes: number[]) => {
    objects.clear();
    const keys = sizes.map((size, i) => {
      const key = `uploads/u/part_${i}`;
      objects.set(key, Buffer.alloc(size, 65 + i));
      return key;
    });
    s3.on(GetObjectCommand).callsFake(async (input: { Key: string }) => {
      const data = objects.get(input.Key);
      if (!data) throw new NoSuchKey({ message: 'no such key', $metadata: {} });
      return { Body: Readable.from([data.subarray(0, data.length >> 1), data.subarray(data.length >> 1)]) };
    });
    s3.on(CreateMultipartUploadCommand).resolves({ UploadId: 'join-1' });
    s3.on(CompleteMultipartUploadCommand).resolves({});
    s3.on(AbortMultipartUploadCommand).resolves({});
    return { keys, sizes, all: Buffer.concat(keys.map((key) => objects.get(key)!)) };
  };
  // Reads the streamed body as S3 would; `fail` decides, per part number and try, to fail instead.
  const acceptParts = (fail: (partNumber: number, attempt: number) => boolean = () => false) => {
    const attempts = new Map<number, number>();
    s3.on(UploadPartCommand).callsFake(async (input: { PartNumber: number; Body: Readable }) => {
      const attempt = (attempts.get(input.PartNumber) ?? 0) + 1;
      attempts.set(input.PartNumber, attempt);
      mostInFlight = Math.max(mostInFlight, ++inFlight);
      try {
        const pieces: Buffer[] = [];
        for await (const piece of input.Body) pieces.push(Buffer.from(piece));
        await new Promise((resolve) => setTimeout(resolve, 5));
        if (fail(input.PartNumber, attempt)) throw new Error(`part ${input.PartNumber} failed`);
        received.set(input.PartNumber, Buffer.concat(pieces));
        return { ETag: `"join-${input.PartNumber}"` };
      } finally {
        inFlight--;
      }
    });
  };
  beforeEach(() => {
    received = new Map();
    inFlight = 0;
    mostInFlight = 0;
  });

  it('groups consecutive parts into multipart parts of 5 MiB or more, each streamed with its exact length', async () => {
    const { keys, sizes, all } = store([3 * MiB, 3 * MiB, MiB, 6 * MiB, 2 * MiB, 2 * MiB, MiB / 2]);
    acceptParts();
    expect(await joiner.concat('files/joined', keys, { sizes })).toEqual({ bytes: all.length });

    const parts = s3.commandCalls(UploadPartCommand).map((call) => call.args[0].input);
    expect(parts.map((p) => [p.PartNumber, p.ContentLength, p.UploadId, p.Key])).toEqual([
      [1, 6 * MiB, 'join-1', 'files/joined'],
      [2, 7 * MiB, 'join-1', 'files/joined'],
      [3, 4.5 * MiB, 'join-1', 'files/joined'],
    ]);
    expect(Buffer.concat([1, 2, 3].map((n) => received.get(n)!)).equals(all)).toBe(true);
    expect(s3.commandCalls(CompleteMultipartUploadCommand)[0]!.args[0].input).toEqual({
      Bucket: BUCKET,
      Key: 'files/joined',
      UploadId: 'join-1',
      MultipartUpload: { Parts: [1, 2, 3].map((n) => ({ PartNumber: n, ETag: `"join-${n}"` })) },
    });
    expect(s3.commandCalls(PutObjectCommand)).toHaveLength(0);
  });

  it('streams at most concatConcurrency groups at once, and completes them in order', async () => {
    const { keys, sizes, all } = store(Array.from({ length: 10 }, (_, i) => 5 * MiB + i));
    acceptParts();
    expect(await joiner.concat('files/many', keys, { sizes })).toEqual({ bytes: all.length });
    expect(mostInFlight).toBe(3);
    const completed = s3.commandCalls(CompleteMultipartUploadCommand)[0]!.args[0].input.MultipartUpload!.Parts!;
    expect(completed.map((p) => p.PartNumber)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it('sends a join no larger than one part as one PutObject', async () => {
    const { keys, sizes, all } = store([MiB, 2 * MiB]);
    s3.on(PutObjectCommand).resolves({});
    expect(await joiner.concat('files/small', keys, { sizes })).toEqual({ bytes: all.length });
    expect(Buffer.from(s3.commandCalls(PutObjectCommand)[0]!.args[0].input.Body as Uint8Array).equals(all)).toBe(true);
    expect(s3.commandCalls(CreateMultipartUploadCommand)).toHaveLength(0);
  });

  it('tries a failed group again, with its parts read again', async () => {
    const { keys, sizes, all } = store([5 * MiB, 5 * MiB, 5 * MiB]);
    acceptParts((partNumber, attempt) => partNumber === 2 && attempt === 1);
    expect(await joiner.concat('files/retried', keys, { sizes })).toEqual({ bytes: all.length });
    expect(
      s3
        .commandCalls(UploadPartCommand)
        .map((call) => call.args[0].input.PartNumber)
        .sort(),
    ).toEqual([1, 2, 2, 3]);
    expect(Buffer.concat([1, 2, 3].map((n) => received.get(n)!)).equals(all)).toBe(true);
    expect(s3.commandCalls(AbortMultipartUploadCommand)).toHaveLength(0);
  });

  it('aborts the multipart upload when a group keeps failing', async () => {
    const { keys, sizes } = store(Array.from({ length: 12 }, () => 5 * MiB));
    let sentBeforeFailure = 0;
    acceptParts((partNumber, attempt) => {
      if (partNumber !== 1) return false;
      if (attempt === 3) sentBeforeFailure = s3.commandCalls(UploadPartCommand).length;
      return true;
    });
    await expect(joiner.concat('files/failed', keys, { sizes })).rejects.toThrow('part 1 failed');
    expect(s3.commandCalls(UploadPartCommand).filter((call) => call.args[0].input.PartNumber === 1)).toHaveLength(3);
    // No group starts after the failure.
    expect(s3.commandCalls(UploadPartCommand)).toHaveLength(sentBeforeFailure);
    expect(sentBeforeFailure).toBeLessThan(12 + 2);
    expect(s3.commandCalls(AbortMultipartUploadCommand)[0]!.args[0].input).toEqual({
      Bucket: BUCKET,
      Key: 'files/failed',
      UploadId: 'join-1',
    });
    expect(s3.commandCalls(CompleteMultipartUploadCommand)).toHaveLength(0);
  });

  it('fails at once on a missing part, or one of another size, and aborts', async () => {
    const { keys, sizes } = store([5 * MiB, 5 * MiB, 5 * MiB]);
    acceptParts();
    objects.delete(keys[1]!);
    await expect(joiner.concat('files/missing', keys, { sizes })).rejects.toBeInstanceOf(BlobNotFoundError);
    expect(s3.commandCalls(UploadPartCommand).filter((call) => call.args[0].input.PartNumber === 2)).toHaveLength(1);
    expect(s3.commandCalls(AbortMultipartUploadCommand)).toHaveLength(1);

    s3.resetHistory();
    objects.set(keys[1]!, Buffer.alloc(5 * MiB - 1));
    await expect(joiner.concat('files/changed', keys, { sizes })).rejects.toThrow(`${keys[1]} is not ${5 * MiB} bytes long`);
    expect(s3.commandCalls(AbortMultipartUploadCommand)).toHaveLength(1);
    expect(s3.commandCalls(CompleteMultipartUploadCommand)).toHaveLength(0);
  });

  it('completes only once the gate opens, and aborts when it fails', async () => {
    const { keys, sizes } = store([5 * MiB, 5 * MiB]);
    acceptParts();
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const joining = joiner.concat('files/gated', keys, { sizes, gate });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(received.size).toBe(2);
    expect(s3.commandCalls(CompleteMultipartUploadCommand)).toHaveLength(0);
    open();
    await joining;
    expect(s3.commandCalls(CompleteMultipartUploadCommand)).toHaveLength(1);

    s3.resetHistory();
    await expect(joiner.concat('files/closed', keys, { sizes, gate: Promise.reject(new Error('md5 differs')) })).rejects.toThrow(
      'md5 differs',
    );
    expect(s3.commandCalls(AbortMultipartUploadCommand)).toHaveLength(1);
    expect(s3.commandCalls(CompleteMultipartUploadCommand)).toHaveLength(0);
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
    expect(url.searchParams.get('response-content-disposition')).toBe('attachment; filename="batch_1 \\"x\\".jsonl"');
    expect(s3.calls()).toHaveLength(0);
  });
});
