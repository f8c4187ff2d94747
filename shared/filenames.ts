// A file's name as the client sent it: kept as is (UTF-8, any script), refused only where it could
// not travel back safely, and sent back in a Content-Disposition header that every client reads
// (RFC 6266: an ASCII `filename` for old clients, `filename*=UTF-8''…` per RFC 5987 for the rest).
// Used by local downloads and by the S3 presigned URL alike, so both answer the same header.
import { create as contentDisposition } from 'content-disposition';

/** The longest filename accepted, in UTF-16 code units (OpenAI's Uploads API caps it too). */
export const MAX_FILENAME_LENGTH = 1024;

// C0 controls, DEL, C1 controls, and the Unicode line and paragraph separators: none belongs in a
// name, and each can break a header, a log line or a terminal that shows it.
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is this pattern's job.
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/u;
// A UTF-16 surrogate without its other half: not a character, and not encodable as UTF-8.
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const LONE_SURROGATES = new RegExp(LONE_SURROGATE.source, 'g');

/** Why this filename is refused, in words for the client; undefined when it is fine. */
export function filenameProblem(filename: string): string | undefined {
  if (filename.length > MAX_FILENAME_LENGTH) return `a filename may be at most ${MAX_FILENAME_LENGTH} characters`;
  const control = CONTROL_CHARACTER.exec(filename);
  if (control) {
    const code = control[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0');
    return `a filename may not contain control characters (it has U+${code})`;
  }
  if (LONE_SURROGATE.test(filename)) return 'a filename must be valid Unicode (it has a lone surrogate)';
  return undefined;
}

/** `attachment` with the filename, for any stored name (also one stored before these rules). */
export function attachmentDisposition(filename: string): string {
  return contentDisposition(filename.replace(LONE_SURROGATES, '\ufffd'), { type: 'attachment' });
}
