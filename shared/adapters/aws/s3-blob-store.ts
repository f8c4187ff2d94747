// The BlobStore on S3. Bodies stream both ways and memory stays bounded by the part size: a
// small body is one PutObject; a large or unknown-length one is a multipart upload of 8 MiB parts
// written here (lib-storage's Upload does not work against S3-compatible test servers such as
// s3rver), aborted on failure so no half object ever becomes visible. `concat` streams the parts
// through the same writer: S3 multipart parts must be at least 5 MiB, and chunk results are small.
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  UploadPartCommand,
  type CompletedPart,
  type S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { BlobNotFoundError, type BlobBody, type BlobStore, type ByteRange } from '../../ports.js';

export const MIN_PART_BYTES = 5 * 1024 * 1024;
export const DEFAULT_PART_BYTES = 8 * 1024 * 1024;
const DELETE_BATCH = 1_000;

export interface S3BlobStoreOptions {
  client: S3Client;
  bucket: string;
  /** Multipart part size (5 MiB or more); a body no larger than one part is a single PutObject. */
  partBytes?: number;
  /** Parts uploaded at once; memory held is about partBytes × (this + 1). */
  partConcurrency?: number;
}

/**
 * Options every S3 client needs against an S3-compatible server that is not AWS (s3rver, MinIO):
 * new SDK clients otherwise add CRC32 checksums and aws-chunked bodies, which such servers refuse.
 */
export function s3CompatibleClientConfig(endpoint: string): S3ClientConfig {
  return {
    endpoint,
    forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  };
}

export class S3BlobStore implements BlobStore {
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly partBytes: number;
  private readonly partConcurrency: number;

  constructor(options: S3BlobStoreOptions) {
    this.client = options.client;
    this.bucket = options.bucket;
    this.partBytes = Math.max(MIN_PART_BYTES, options.partBytes ?? DEFAULT_PART_BYTES);
    this.partConcurrency = Math.max(1, options.partConcurrency ?? 4);
  }

  async put(key: string, body: BlobBody): Promise<{ bytes: number }> {
    if (typeof body === 'string' || body instanceof Uint8Array) {
      const bytes = typeof body === 'string' ? Buffer.from(body) : body;
      if (bytes.length <= this.partBytes) return this.putSmall(key, bytes);
      return this.putStream(key, (async function* () {
        yield bytes;
      })());
    }
    return this.putStream(key, body);
  }

  async get(key: string, range?: ByteRange): Promise<AsyncIterable<Uint8Array>> {
    if (range && range.end <= range.start) {
      // An empty range has no HTTP form; still answer "not found" for a missing object.
      if ((await this.size(key)) === undefined) throw new BlobNotFoundError(key);
      return emptyBody();
    }
    try {
      const out = await this.client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: key,
          // HTTP ranges are inclusive; ours are not.
          Range: range ? `bytes=${range.start}-${range.end - 1}` : undefined,
        }),
      );
      return (out.Body as AsyncIterable<Uint8Array> | undefined) ?? emptyBody();
    } catch (error) {
      if (isNotFound(error)) throw new BlobNotFoundError(key);
      // A range that starts at or past the end: the filesystem store answers no bytes, so do we.
      if (errorName(error) === 'InvalidRange') return emptyBody();
      throw error;
    }
  }

  async size(key: string): Promise<number | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return out.ContentLength ?? 0;
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async concat(key: string, parts: string[]): Promise<{ bytes: number }> {
    const client = this.client;
    const bucket = this.bucket;
    async function* joined(): AsyncIterable<Uint8Array> {
      for (const part of parts) {
        let body: AsyncIterable<Uint8Array> | undefined;
        try {
          body = (await client.send(new GetObjectCommand({ Bucket: bucket, Key: part }))).Body as AsyncIterable<Uint8Array> | undefined;
        } catch (error) {
          if (isNotFound(error)) throw new BlobNotFoundError(part);
          throw error;
        }
        if (body) yield* body;
      }
    }
    return this.putStream(key, joined());
  }

  async delete(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += DELETE_BATCH) {
      const batch = keys.slice(i, i + DELETE_BATCH);
      const out = await this.client.send(
        new DeleteObjectsCommand({
          Bucket: this.bucket,
          Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
        }),
      );
      // DeleteObjects answers 200 and lists the keys it could not delete; a missing key is not one.
      const failed = (out.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey');
      if (failed.length > 0) {
        throw new Error(`could not delete ${failed.length} object(s), first ${failed[0]!.Key}: ${failed[0]!.Code}`);
      }
    }
  }

  async list(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const out = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token }),
      );
      for (const object of out.Contents ?? []) if (object.Key !== undefined) keys.push(object.Key);
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
    // S3 lists in UTF-8 byte order; our keys are ASCII, where that is also JavaScript's order.
    return keys.sort();
  }

  async presignGet(key: string, options: { expiresInSeconds: number; filename: string }): Promise<string> {
    const filename = options.filename.replace(/["\\\r\n]/g, '_');
    const command = new GetObjectCommand({
      Bucket: this.bucket,
      Key: key,
      ResponseContentDisposition: `attachment; filename="${filename}"`,
      ResponseContentType: 'application/octet-stream',
    });
    return getSignedUrl(this.client, command, { expiresIn: options.expiresInSeconds });
  }

  private async putSmall(key: string, bytes: Uint8Array): Promise<{ bytes: number }> {
    await this.client.send(
      new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: bytes, ContentLength: bytes.length }),
    );
    return { bytes: bytes.length };
  }

  /**
   * Reads `source` into parts of `partBytes`. If it ends before the first part fills, the whole
   * body is one PutObject; otherwise the parts go up as a multipart upload, `partConcurrency` at
   * a time, and the upload is aborted if anything fails (S3 then keeps no trace of it).
   */
  private async putStream(key: string, source: AsyncIterable<Uint8Array>): Promise<{ bytes: number }> {
    const parts = splitIntoParts(source, this.partBytes);
    const first = await parts.next();
    if (first.done) return this.putSmall(key, new Uint8Array(0));
    const second = await parts.next();
    if (second.done) return this.putSmall(key, first.value);

    const { UploadId } = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: key }));
    if (!UploadId) throw new Error(`S3 returned no upload id for ${key}`);
    const completed: CompletedPart[] = [];
    const inFlight = new Set<Promise<void>>();
    let bytes = 0;
    let failure: unknown;
    const upload = (PartNumber: number, body: Uint8Array) => {
      bytes += body.length;
      const sending: Promise<void> = this.client
        .send(
          new UploadPartCommand({ Bucket: this.bucket, Key: key, UploadId, PartNumber, Body: body, ContentLength: body.length }),
        )
        .then(
          (out) => {
            // As lib-storage does: the part's checksum (the SDK adds CRC32 by default on AWS) goes
            // with it into Complete; S3-compatible servers return none.
            completed.push({
              PartNumber,
              ETag: out.ETag,
              ...(out.ChecksumCRC32 && { ChecksumCRC32: out.ChecksumCRC32 }),
              ...(out.ChecksumCRC32C && { ChecksumCRC32C: out.ChecksumCRC32C }),
              ...(out.ChecksumCRC64NVME && { ChecksumCRC64NVME: out.ChecksumCRC64NVME }),
              ...(out.ChecksumSHA1 && { ChecksumSHA1: out.ChecksumSHA1 }),
              ...(out.ChecksumSHA256 && { ChecksumSHA256: out.ChecksumSHA256 }),
            });
          },
          (error: unknown) => {
            failure ??= error;
          },
        )
        .finally(() => inFlight.delete(sending));
      inFlight.add(sending);
    };

    try {
      upload(1, first.value);
      upload(2, second.value);
      let partNumber = 2;
      for await (const part of parts) {
        while (inFlight.size >= this.partConcurrency) await Promise.race(inFlight);
        if (failure) break;
        upload(++partNumber, part);
      }
      await Promise.all(inFlight);
      if (failure) throw failure;
      completed.sort((a, b) => a.PartNumber! - b.PartNumber!);
      await this.client.send(
        new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId, MultipartUpload: { Parts: completed } }),
      );
      return { bytes };
    } catch (error) {
      await Promise.allSettled(inFlight);
      await this.client
        .send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId }))
        .catch(() => undefined); // the bucket's lifecycle rule reaps what an abort misses
      await parts.return(undefined);
      throw error;
    }
  }
}

/** Regroups a stream of pieces of any size into parts of exactly `size` bytes (the last may be smaller). */
async function* splitIntoParts(source: AsyncIterable<Uint8Array>, size: number): AsyncGenerator<Uint8Array, void, undefined> {
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  for await (const piece of source) {
    let rest = piece;
    while (pendingBytes + rest.length >= size) {
      const take = size - pendingBytes;
      pending.push(rest.subarray(0, take));
      yield Buffer.concat(pending, size);
      pending = [];
      pendingBytes = 0;
      rest = rest.subarray(take);
    }
    if (rest.length > 0) {
      pending.push(rest);
      pendingBytes += rest.length;
    }
  }
  if (pendingBytes > 0) yield Buffer.concat(pending, pendingBytes);
}

async function* emptyBody(): AsyncIterable<Uint8Array> {}

function errorName(error: unknown): string | undefined {
  return (error as { name?: string; Code?: string })?.name ?? (error as { Code?: string })?.Code;
}

/** A missing object (GET answers NoSuchKey; HEAD, which has no body, a bare 404 named NotFound). A missing bucket is not. */
function isNotFound(error: unknown): boolean {
  const name = errorName(error);
  return name === 'NoSuchKey' || name === 'NotFound';
}
