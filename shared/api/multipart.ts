// Streams a multipart/form-data upload: the `file` part goes straight into the BlobStore as it
// arrives, never whole in memory; the text fields are collected. The openai SDK may send the file
// before or after the other fields, so nothing here depends on their order.

import { Readable, Transform } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import busboy from 'busboy';
import { type ApiError, badRequest } from './errors.js';

/**
 * Looks at a file's bytes as they stream to the BlobStore. Once it answers with an error, nothing
 * more is stored and the rest of the upload is read and dropped; the upload then fails with it.
 */
export interface StreamCheck {
  push(chunk: Uint8Array): ApiError | undefined;
  end(): ApiError | undefined;
}

/**
 * `stream` through `check`. The stream itself never fails for the check (a store may not be
 * listening yet when it ends): after the store, `refused()` tells whether the file was refused.
 */
export function checkedStream(stream: Readable, check: StreamCheck): { stream: Readable; refused: () => ApiError | undefined } {
  let refused: ApiError | undefined;
  const gate = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      if (refused) return done();
      refused = check.push(chunk);
      done(null, refused ? undefined : chunk);
    },
    flush(done) {
      if (!refused) refused = check.end();
      done();
    },
  });
  stream.on('error', (error) => gate.destroy(error));
  return { stream: stream.pipe(gate), refused: () => refused };
}

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
  options: {
    fileField: string;
    maxFileBytes: number;
    store: (body: Readable) => Promise<{ bytes: number }>;
    /** Checks the file while it streams (a refused file is not stored, and the store fails). */
    check?: () => StreamCheck;
  },
): Promise<ReceivedForm> {
  const contentType = request.headers.get('content-type') ?? '';
  if (!contentType.toLowerCase().startsWith('multipart/form-data') || !request.body) {
    throw badRequest('The request must be multipart/form-data with a file part.', null, 'invalid_content_type');
  }
  let parser: busboy.Busboy;
  try {
    parser = busboy({
      headers: { 'content-type': contentType },
      // busboy reports a file that reaches fileSize as cut: one byte more lets exactly maxFileBytes through.
      limits: { fileSize: options.maxFileBytes + 1, files: 1, fields: 32, fieldSize: 64 * 1024 },
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
    const checked = options.check ? checkedStream(stream, options.check()) : undefined;
    stored = options.store(checked?.stream ?? stream).then(({ bytes }) => {
      // A file cut at the size limit is refused for its size (413), whatever else is wrong with it.
      const refused = truncated ? undefined : checked?.refused();
      if (refused) throw refused;
      return { filename: info.filename || 'unknown_file', bytes, truncated };
    });
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
