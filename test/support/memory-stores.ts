// In-memory stand-ins for the parts of the MetaStore and the BlobStore the Uploads domain uses, for
// unit tests that need no database. Each conditional write checks and changes a record in one
// synchronous step, which is what DynamoDB's conditions give (the contract suites in test/adapters
// hold the real adapters to the same behaviour). Records go in and out as copies.
import type { FileRecord, UploadPartRecord, UploadRecord, UploadStatus } from '../../shared/batch/model.js';
import {
  type BlobBody,
  BlobNotFoundError,
  type BlobStore,
  type ByteRange,
  type ConcatOptions,
  type DeletedFile,
  type MetaStore,
} from '../../shared/ports.js';
import type { UploadMeta } from '../../shared/uploads/model.js';

const copy = <T>(record: T): T => structuredClone(record);

export class MemoryMetaStore implements UploadMeta {
  readonly uploads = new Map<string, UploadRecord>();
  readonly parts = new Map<string, UploadPartRecord>();
  readonly files = new Map<string, FileRecord>();

  /** `now` judges whether a file has expired, as the real store's clock does. */
  constructor(private readonly now: () => number = Date.now) {}

  async createUpload(upload: UploadRecord): Promise<void> {
    if (this.uploads.has(upload.id)) throw new Error(`upload ${upload.id} exists`);
    this.uploads.set(upload.id, copy(upload));
  }

  async getUpload(project: string, id: string): Promise<UploadRecord | undefined> {
    const upload = this.uploads.get(id);
    return upload?.project === project ? copy(upload) : undefined;
  }

  async updateUpload(
    id: string,
    from: readonly UploadStatus[],
    changes: Partial<Pick<UploadRecord, 'status' | 'fileId'>>,
  ): Promise<UploadRecord | undefined> {
    const upload = this.uploads.get(id);
    const set = Object.fromEntries(Object.entries(changes).filter(([, value]) => value !== undefined));
    if (!upload || !from.includes(upload.status) || Object.keys(set).length === 0) return undefined;
    Object.assign(upload, set);
    return copy(upload);
  }

  async claimUploadCompletion(id: string, nowMs: number, untilMs: number): Promise<UploadRecord | undefined> {
    const upload = this.uploads.get(id);
    if (upload?.status !== 'pending' || (upload.completingUntilMs !== undefined && upload.completingUntilMs > nowMs)) return undefined;
    upload.completingUntilMs = untilMs;
    return copy(upload);
  }

  async releaseUploadCompletion(id: string, untilMs: number): Promise<void> {
    const upload = this.uploads.get(id);
    if (upload?.completingUntilMs === untilMs) delete upload.completingUntilMs;
  }

  async addUploadPartBytes(id: string, bytes: number, limit: number): Promise<UploadRecord | undefined> {
    const upload = this.uploads.get(id);
    if (!upload) return undefined;
    const counted = (upload.partBytes ?? 0) + bytes;
    if (bytes > 0 && (upload.status !== 'pending' || counted > limit)) return undefined;
    upload.partBytes = counted;
    return copy(upload);
  }

  async putUploadPart(part: UploadPartRecord): Promise<void> {
    this.parts.set(`${part.uploadId}/${part.id}`, copy(part));
  }

  async getUploadPart(uploadId: string, partId: string): Promise<UploadPartRecord | undefined> {
    const part = this.parts.get(`${uploadId}/${partId}`);
    return part && copy(part);
  }

  async putFile(file: FileRecord): Promise<void> {
    this.files.set(file.id, copy(file));
  }

  async getFile(project: string, id: string): Promise<FileRecord | undefined> {
    const file = this.files.get(id);
    const live = file?.expiresAtMs === null || (file?.expiresAtMs ?? 0) > this.now();
    return file?.project === project && live ? copy(file) : undefined;
  }

  /** No batch pins a file here: a delete removes it, and its blob may go. */
  async deleteFile(project: string, id: string): Promise<DeletedFile | undefined> {
    const file = await this.getFile(project, id);
    if (!file) return undefined;
    this.files.delete(id);
    return { file, blobInUse: false };
  }

  /** This store where a whole MetaStore is asked for (createApiApp): a method it lacks fails the test at once. */
  asMetaStore(): MetaStore {
    return new Proxy(this, {
      get: (target, name, receiver) => {
        if (name in target) return Reflect.get(target, name, receiver);
        return () => Promise.reject(new Error(`MemoryMetaStore has no ${String(name)}`));
      },
    }) as unknown as MetaStore;
  }
}

async function bytesOf(body: BlobBody): Promise<Uint8Array> {
  if (typeof body === 'string') return new TextEncoder().encode(body);
  if (body instanceof Uint8Array) return body.slice();
  const pieces: Uint8Array[] = [];
  for await (const piece of body) pieces.push(piece);
  return Buffer.concat(pieces);
}

export class MemoryBlobStore implements BlobStore {
  readonly objects = new Map<string, Uint8Array>();

  async put(key: string, body: BlobBody): Promise<{ bytes: number }> {
    const bytes = await bytesOf(body);
    this.objects.set(key, bytes);
    return { bytes: bytes.length };
  }

  async get(key: string, range?: ByteRange): Promise<AsyncIterable<Uint8Array>> {
    const bytes = this.objects.get(key);
    if (!bytes) throw new BlobNotFoundError(key);
    const piece = range ? bytes.subarray(range.start, range.end) : bytes;
    return (async function* () {
      yield piece.slice();
    })();
  }

  async size(key: string): Promise<number | undefined> {
    return this.objects.get(key)?.length;
  }

  async concat(key: string, parts: string[], options: ConcatOptions = {}): Promise<{ bytes: number }> {
    options.gate?.catch(() => undefined); // awaited below, unless a part is missing first
    const pieces = parts.map((part) => {
      const bytes = this.objects.get(part);
      if (!bytes) throw new BlobNotFoundError(part);
      return bytes;
    });
    await options.gate;
    return this.put(key, Buffer.concat(pieces));
  }

  async delete(keys: string[]): Promise<void> {
    for (const key of keys) this.objects.delete(key);
  }

  async list(prefix: string): Promise<string[]> {
    return [...this.objects.keys()].filter((key) => key.startsWith(prefix)).sort();
  }
}
