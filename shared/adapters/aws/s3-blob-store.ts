// The BlobStore on S3. Bodies stream both ways and memory stays bounded by the part size: a
// small body is one PutObject; a large or unknown-length one is a multipart upload of 8 MiB parts
// written here (lib-storage's Upload does not work against S3-compatible test servers such as
// s3rver), aborted on failure so no half object ever becomes visible. `concat` streams the parts
// through the same writer: S3 multipart parts must be at least 5 MiB, and chunk results are small.
// Given the parts' sizes (the parts of an upload, up to gigabytes), `concat` instead groups
// consecutive parts into multipart parts of 5 MiB or more and streams the groups in parallel.
import { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  ChecksumAlgorithm,
  type CompletedPart,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
  type S3ClientConfig,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { attachmentDisposition } from '../../filenames.js';
import { type BlobBody, BlobNotFoundError, type BlobStore, type ByteRange, type ConcatOptions } from '../../ports.js';
import { completedPart, gated, groupParts, MIN_PART_BYTES, type PartGroup, splitIntoParts } from './s3-parts.js';

export { MIN_PART_BYTES };

export const DEFAULT_PART_BYTES = 8 * 1024 * 1024;
const DELETE_BATCH = 1_000;
/** Tries of one group of a parallel concat: the SDK does not retry a streamed body. */
const GROUP_ATTEMPTS = 3;

export interface S3BlobStoreOptions {
  client: S3Client;
  bucket: string;
  /** Multipart part size (5 MiB or more); a body no larger than one part is a single PutObject. */
  partBytes?: number;
  /** Parts uploaded at once; memory held is about partBytes × (this + 1). */
  partConcurrency?: number;
  /** Groups of parts streamed at once by a concat with known sizes (nothing is buffered whole). */
  concatConcurrency?: number;
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
  private readonly concatConcurrency: number;
  private checksum: Promise<ChecksumAlgorithm | undefined> | undefined;

  constructor(options: S3BlobStoreOptions) {
    this.client = options.client;
    this.bucket = options.bucket;
    this.partBytes = Math.max(MIN_PART_BYTES, options.partBytes ?? DEFAULT_PART_BYTES);
    this.partConcurrency = Math.max(1, options.partConcurrency ?? 4);
    this.concatConcurrency = Math.max(1, options.concatConcurrency ?? 8);
  }

  /**
   * The checksum algorithm of multipart uploads. A client that computes checksums whenever an
   * operation supports them (the SDK's default, for AWS) sends every part with CRC32, and S3
   * refuses parts whose checksum the CreateMultipartUpload did not name; a client set to
   * WHEN_REQUIRED (s3CompatibleClientConfig) sends parts without one, and names none.
   */
  private multipartChecksum(): Promise<ChecksumAlgorithm | undefined> {
    this.checksum ??= Promise.resolve(this.client.config.requestChecksumCalculation?.()).then((when) =>
      when === 'WHEN_REQUIRED' ? undefined : ChecksumAlgorithm.CRC32,
    );
    return this.checksum;
  }

  /** CreateMultipartUpload with the checksum algorithm its parts will carry. */
  private async createMultipartUpload(key: string): Promise<{ UploadId: string; ChecksumAlgorithm: ChecksumAlgorithm | undefined }> {
    const checksum = await this.multipartChecksum();
    const { UploadId } = await this.client.send(
      new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: key, ...(checksum && { ChecksumAlgorithm: checksum }) }),
    );
    if (!UploadId) throw new Error(`S3 returned no upload id for ${key}`);
    return { UploadId, ChecksumAlgorithm: checksum };
  }

  async put(key: string, body: BlobBody): Promise<{ bytes: number }> {
    if (typeof body === 'string' || body instanceof Uint8Array) {
      const bytes = typeof body === 'string' ? Buffer.from(body) : body;
      if (bytes.length <= this.partBytes) return this.putSmall(key, bytes);
      return this.putStream(
        key,
        (async function* () {
          yield bytes;
        })(),
      );
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

  async concat(key: string, parts: string[], options: ConcatOptions = {}): Promise<{ bytes: number }> {
    const { sizes, gate } = options;
    gate?.catch(() => undefined); // awaited before the object is stored, unless the join fails first
    if (sizes && sizes.length !== parts.length) throw new Error(`concat: ${parts.length} parts but ${sizes.length} sizes`);
    const total = sizes?.reduce((sum, size) => sum + size, 0) ?? 0;
    if (!sizes || total <= this.partBytes) return this.putStream(key, gated(this.read(parts, sizes), gate));
    return this.concatGroups(key, groupParts(parts, sizes), gate);
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
      const out = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token }));
      for (const object of out.Contents ?? []) if (object.Key !== undefined) keys.push(object.Key);
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
    // S3 lists in UTF-8 byte order; our keys are ASCII, where that is also JavaScript's order.
    return keys.sort();
  }

  async presignGet(key: string, options: { expiresInSeconds: number; filename: string }): Promise<string> {
    const command = new GetObjectCommand({
      Bucket: this.bucket,
      Key: key,
      // The very header a local download answers (RFC 6266, with filename*=UTF-8''… beside an ASCII fallback).
      ResponseContentDisposition: attachmentDisposition(options.filename),
      ResponseContentType: 'application/octet-stream',
    });
    return getSignedUrl(this.client, command, { expiresIn: options.expiresInSeconds });
  }

  /** The objects one after the other; with `sizes`, each must have exactly its size. */
  private async *read(keys: readonly string[], sizes?: readonly number[]): AsyncGenerator<Uint8Array> {
    for (const [i, key] of keys.entries()) {
      let body: AsyncIterable<Uint8Array> | undefined;
      try {
        body = (await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }))).Body as
          | AsyncIterable<Uint8Array>
          | undefined;
      } catch (error) {
        if (isNotFound(error)) throw new BlobNotFoundError(key);
        throw error;
      }
      const size = sizes?.[i];
      let bytes = 0;
      for await (const piece of body ?? emptyBody()) {
        bytes += piece.length;
        if (size !== undefined && bytes > size) throw new ChangedSizeError(key, size);
        yield piece;
      }
      if (size !== undefined && bytes !== size) throw new ChangedSizeError(key, size);
    }
  }

  /**
   * A multipart upload of one part per group, `concatConcurrency` groups at a time, each streamed
   * from its objects with its exact length, completed once `gate` resolves. The first failure
   * stops the others, and the upload is aborted (S3 then keeps no trace of it).
   */
  private async concatGroups(key: string, groups: PartGroup[], gate: Promise<unknown> | undefined): Promise<{ bytes: number }> {
    const { UploadId, ChecksumAlgorithm } = await this.createMultipartUpload(key);
    const stop = new AbortController();
    const completed: CompletedPart[] = [];
    let failure: unknown;
    let next = 0;
    const worker = async () => {
      while (next < groups.length && !stop.signal.aborted) {
        const index = next++;
        try {
          completed[index] = await this.uploadGroup({ Key: key, UploadId, ChecksumAlgorithm }, index + 1, groups[index]!, stop.signal);
        } catch (error) {
          if (!stop.signal.aborted) failure = error;
          stop.abort();
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.concatConcurrency, groups.length) }, worker));
    try {
      if (stop.signal.aborted) throw failure;
      await gate;
      await this.client.send(
        new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId, MultipartUpload: { Parts: completed } }),
      );
      return { bytes: groups.reduce((sum, group) => sum + group.bytes, 0) };
    } catch (error) {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId })).catch(() => undefined); // the bucket's lifecycle rule reaps what an abort misses
      throw error;
    }
  }

  private async uploadGroup(
    upload: { Key: string; UploadId: string; ChecksumAlgorithm: ChecksumAlgorithm | undefined },
    PartNumber: number,
    group: PartGroup,
    stop: AbortSignal,
  ): Promise<CompletedPart> {
    for (let attempt = 1; ; attempt++) {
      // The SDK pipes the body into the request, which then never learns that the body failed:
      // a failed body aborts the request.
      const failed = new AbortController();
      const body = Readable.from(this.read(group.keys, group.sizes));
      let bodyError: unknown;
      body.on('error', (error) => {
        bodyError = error;
        failed.abort();
      });
      try {
        const out = await this.client.send(
          new UploadPartCommand({ Bucket: this.bucket, ...upload, PartNumber, Body: body, ContentLength: group.bytes }),
          { abortSignal: AbortSignal.any([stop, failed.signal]) },
        );
        return completedPart(PartNumber, out);
      } catch (error) {
        const cause = bodyError ?? error;
        const lasting = cause instanceof BlobNotFoundError || cause instanceof ChangedSizeError;
        if (stop.aborted || lasting || attempt >= GROUP_ATTEMPTS) throw cause;
      } finally {
        body.destroy();
      }
    }
  }

  private async putSmall(key: string, bytes: Uint8Array): Promise<{ bytes: number }> {
    await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: bytes, ContentLength: bytes.length }));
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

    const { UploadId, ChecksumAlgorithm } = await this.createMultipartUpload(key);
    const completed: CompletedPart[] = [];
    const inFlight = new Set<Promise<void>>();
    let bytes = 0;
    let failure: unknown;
    const upload = (PartNumber: number, body: Uint8Array) => {
      bytes += body.length;
      const sending: Promise<void> = this.client
        .send(
          new UploadPartCommand({
            Bucket: this.bucket,
            Key: key,
            UploadId,
            ChecksumAlgorithm,
            PartNumber,
            Body: body,
            ContentLength: body.length,
          }),
        )
        .then(
          (out) => {
            completed.push(completedPart(PartNumber, out));
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
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId })).catch(() => undefined); // the bucket's lifecycle rule reaps what an abort misses
      await parts.return(undefined);
      throw error;
    }
  }
}

/** An object is not the size it was said to have (it changed since): the join would be wrong. */
class ChangedSizeError extends Error {
  constructor(key: string, size: number) {
    super(`${key} is not ${size} bytes long, as it was when the join began`);
    this.name = 'ChangedSizeError';
  }
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
