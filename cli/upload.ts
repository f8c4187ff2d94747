// Uploading an input file: /v1/files for a small one, the Uploads API in parts above a threshold
// (in AWS a request carries at most about 4.5 MB of file bytes). Parts are read by byte range, a
// few in flight, so a large file is never held whole.
import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type OpenAI from 'openai';
import { toFile } from 'openai';
import type { FileObject } from 'openai/resources/files';
import pLimit from 'p-limit';
import { UsageError } from './exit.js';
import { type Output, uploadProgress } from './progress.js';

/** Up to 4 MiB goes to /v1/files, larger files through the Uploads API. */
export const DEFAULT_MULTIPART_THRESHOLD = 4 * 1024 * 1024;
/** 4 MiB parts fit API Gateway's payload limit with room for the multipart envelope. */
export const DEFAULT_PART_SIZE = 4 * 1024 * 1024;
const PARTS_IN_FLIGHT = 3;

export interface UploadOptions {
  multipartThreshold: number;
  partSize: number;
  progress: Output;
}

export async function uploadInput(client: OpenAI, file: string, options: UploadOptions): Promise<FileObject> {
  const { size } = await stat(file);
  if (size <= options.multipartThreshold) return client.files.create({ file: createReadStream(file), purpose: 'batch' });
  return uploadInParts(client, file, size, options);
}

async function uploadInParts(client: OpenAI, file: string, size: number, options: UploadOptions): Promise<FileObject> {
  const name = path.basename(file);
  const partCount = Math.ceil(size / options.partSize);
  const upload = await client.uploads.create({ bytes: size, filename: name, mime_type: 'application/jsonl', purpose: 'batch' });
  const handle = await open(file);
  const progress = uploadProgress(name, size, partCount, options.progress);
  try {
    const limit = pLimit(PARTS_IN_FLIGHT);
    const partIds = await Promise.all(
      Array.from({ length: partCount }, (_, index) =>
        limit(async () => {
          const offset = index * options.partSize;
          const length = Math.min(options.partSize, size - offset);
          const buffer = Buffer.alloc(length);
          const { bytesRead } = await handle.read(buffer, 0, length, offset);
          if (bytesRead !== length) throw new UsageError(`${file} changed while it was being uploaded`);
          const part = await client.uploads.parts.create(upload.id, { data: await toFile(buffer, `${name}.part${index + 1}`) });
          progress.partDone(length);
          return part.id;
        }),
      ),
    );
    progress.stop();
    const completed = await client.uploads.complete(upload.id, { part_ids: partIds });
    if (!completed.file) throw new Error(`upload ${upload.id} completed without a file`);
    return completed.file;
  } catch (error) {
    progress.stop();
    // Leave no pending upload behind; the first error is the one worth showing.
    await client.uploads.cancel(upload.id).catch(() => undefined);
    throw error;
  } finally {
    await handle.close();
  }
}

/** The `url` of the file's first request line: the batch's endpoint unless --endpoint says otherwise. */
export async function endpointOfFirstLine(file: string): Promise<string> {
  const lines = createInterface({ input: createReadStream(file, { encoding: 'utf8' }), crlfDelay: Infinity });
  let number = 0;
  try {
    for await (const raw of lines) {
      number += 1;
      const line = (number === 1 ? raw.replace(/^\uFEFF/, '') : raw).trim();
      if (!line) continue;
      let request: unknown;
      try {
        request = JSON.parse(line);
      } catch {
        throw new UsageError(`${file} line ${number} is not JSON, so its endpoint is unknown; pass --endpoint`);
      }
      const url = request && typeof request === 'object' ? (request as { url?: unknown }).url : undefined;
      if (typeof url !== 'string' || !url) throw new UsageError(`${file} line ${number} has no url; pass --endpoint`);
      return url;
    }
  } finally {
    lines.close();
  }
  throw new UsageError(`${file} has no request line`);
}
