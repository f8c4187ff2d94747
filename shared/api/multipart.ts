// Streams a multipart/form-data upload: the `file` part goes straight into the BlobStore as it
// arrives, never whole in memory; the text fields are collected. The openai SDK may send the file
// before or after the other fields, so nothing here depends on their order.
import busboy from 'busboy';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { badRequest } from './errors.js';

export interface ReceivedFile {
  filename: string;
  bytes: number;
  /** True when the file was cut at the size limit. */
  truncated: boolean;
}

export interface ReceivedForm {
  fields: Record<string, string>;
  file: ReceivedFile | undefined;
}

export async function receiveMultipart(
  request: Request,
  options: { fileField: string; maxFileBytes: number; store: (body: Readable) => Promise<{ bytes: number }> },
): Promise<ReceivedForm> {
  const contentType = request.headers.get('content-type') ?? '';
  if (!contentType.toLowerCase().startsWith('multipart/form-data') || !request.body) {
    throw badRequest('The request must be multipart/form-data with a file part.', null, 'invalid_content_type');
  }
  let parser: busboy.Busboy;
  try {
    parser = busboy({
      headers: { 'content-type': contentType },
      limits: { fileSize: options.maxFileBytes, files: 1, fields: 32, fieldSize: 64 * 1024 },
    });
  } catch {
    throw badRequest('The multipart body is malformed: the content-type has no boundary.', null, 'invalid_multipart');
  }

  const fields: Record<string, string> = {};
  let stored: Promise<ReceivedFile> | undefined;
  parser.on('field', (name, value) => {
    fields[name] = value;
  });
  parser.on('file', (name, stream, info) => {
    if (name !== options.fileField || stored) {
      stream.resume();
      return;
    }
    let truncated = false;
    stream.on('limit', () => {
      truncated = true;
    });
    stored = options.store(stream).then(({ bytes }) => ({ filename: info.filename || 'unknown_file', bytes, truncated }));
    // Keep the rejection for the caller; until awaited it must not count as unhandled.
    stored.catch(() => {});
  });

  const finished = new Promise<void>((resolve, reject) => {
    parser.on('close', resolve);
    parser.on('error', reject);
  });
  const body = Readable.fromWeb(request.body as unknown as WebReadableStream<Uint8Array>);
  body.on('error', (error) => parser.destroy(error));
  body.pipe(parser);
  try {
    await finished;
  } catch {
    await stored?.catch(() => undefined);
    throw badRequest('The multipart body is malformed.', null, 'invalid_multipart');
  }
  return { fields, file: stored ? await stored : undefined };
}
