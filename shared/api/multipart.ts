// Streams a multipart/form-data upload: the `file` part goes straight into the BlobStore as it
// arrives, never whole in memory; the text fields are collected. The openai SDK may send the file
// before or after the other fields, so nothing here depends on their order.
//
// A body can end anywhere: a client disconnects, a proxy cuts it, a request is malformed on purpose.
// Every stream here (the request body, the parser, the file part, the stream the store reads) has
// an error listener from the moment it exists, so such a body fails this one request: the store
// sees the error and keeps nothing, and the caller gets invalid_multipart.

import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
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
 * `stream` through `check`, as the stream a store reads. The gate never fails for the check (a
 * store may not be listening yet when it ends): after the store, `refused()` tells whether the file
 * was refused. An error of `stream` itself does reach the store.
 */
export function checkedStream(stream: Readable, check?: StreamCheck): { stream: Readable; refused: () => ApiError | undefined } {
  let refused: ApiError | undefined;
  const gate = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      if (refused || !check) return done(null, refused ? undefined : chunk);
      refused = check.push(chunk);
      done(null, refused ? undefined : chunk);
    },
    flush(done) {
      if (!refused && check) refused = check.end();
      done();
    },
  });
  // The store may start reading later (after a mkdir, say): until then the error waits in the
  // gate, which hands it to the store's first read.
  gate.on('error', () => undefined);
  pipeline(stream, gate).catch(() => undefined);
  return { stream: gate, refused: () => refused };
}

export interface ReceivedFile {
  filename: string;
  bytes: number;
  /** True when the file was cut at the size limit. */
  truncated: boolean;
}

export interface ReceivedForm {
  /** The text fields, by name (a null-prototype map: a field may be called anything). */
  fields: Record<string, string>;
  file: ReceivedFile | undefined;
}

/** The store failed for a reason of its own (not the body's): stop reading and answer its error. */
class StoreFailed extends Error {
  constructor(readonly error: unknown) {
    super('the store failed');
  }
}

export async function receiveMultipart(
  request: Request,
  options: {
    fileField: string;
    maxFileBytes: number;
    store: (body: Readable) => Promise<{ bytes: number }>;
    /** Checks the file while it streams (a refused file is not stored, and the store fails). */
    check?: () => StreamCheck;
    /** Refuses a file by its name before any byte is stored (the rest of the body is read and dropped). */
    checkFilename?: (filename: string) => ApiError | undefined;
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
      // The openai SDK and curl send raw UTF-8 filenames; busboy would read them as latin1.
      defParamCharset: 'utf8',
      // busboy reports a file that reaches fileSize as cut: one byte more lets exactly maxFileBytes through.
      limits: { fileSize: options.maxFileBytes + 1, files: 1, fields: 32, fieldSize: 64 * 1024 },
    });
  } catch {
    throw badRequest('The multipart body is malformed: the content-type has no boundary.', null, 'invalid_multipart');
  }

  const fields: Record<string, string> = Object.create(null);
  let stored: Promise<ReceivedFile> | undefined;
  let refusedName: ApiError | undefined;
  parser.on('field', (name, value) => {
    fields[name] = value;
  });
  parser.on('file', (name, stream, info) => {
    // busboy destroys a file stream with an error when the body ends inside it.
    stream.on('error', () => undefined);
    if (name !== options.fileField || stored || refusedName) {
      stream.resume();
      return;
    }
    const filename = info.filename || 'unknown_file';
    refusedName = options.checkFilename?.(filename);
    if (refusedName) {
      stream.resume();
      return;
    }
    let truncated = false;
    stream.on('limit', () => {
      truncated = true;
    });
    const checked = checkedStream(stream, options.check?.());
    stored = options.store(checked.stream).then(
      ({ bytes }) => {
        // A file cut at the size limit is refused for its size (413), whatever else is wrong with it.
        const refused = truncated ? undefined : checked.refused();
        if (refused) throw refused;
        return { filename, bytes, truncated };
      },
      (error: unknown) => {
        // The file stream's own error (the body ended early) also ends the parser; anything else
        // is the store's, and there is no point in reading the rest of the body.
        if (!stream.errored) parser.destroy(new StoreFailed(error));
        throw error;
      },
    );
    // Keep the rejection for the caller; until awaited it must not count as unhandled.
    stored.catch(() => undefined);
  });

  const finished = new Promise<void>((resolve, reject) => {
    parser.on('close', resolve);
    parser.on('error', reject);
  });
  const body = Readable.fromWeb(request.body as unknown as WebReadableStream<Uint8Array>);
  // The client went away, or the body broke off: the parser fails, and with it the file stream.
  body.on('error', (error) => parser.destroy(error));
  body.pipe(parser);
  try {
    await finished;
  } catch (error) {
    await stored?.catch(() => undefined);
    if (error instanceof StoreFailed) throw error.error;
    throw badRequest('The multipart body is malformed or ended early.', null, 'invalid_multipart');
  }
  if (refusedName) throw refusedName;
  return { fields, file: stored ? await stored : undefined };
}
