// The checks a batch input file gets while it is being uploaded, as its bytes stream past: cheap
// ones that tell at once that a file can never make a batch, so it is refused with a clear error
// before any batch exists. Nothing is buffered beyond the first request line.
//
//   - it is JSONL: the first non-blank line (after an optional UTF-8 BOM) is valid UTF-8 and a
//     JSON object, and no byte anywhere is NUL (binary files, UTF-16 text);
//   - it is within the limits: no line longer than maxLineBytes, at most maxRequests request lines,
//     at least one (the byte limit is the multipart parser's);
//
// Full line-by-line validation, with every bad line numbered, happens when a batch is created.
import { JsonlLineSplitter, type RawLineHandler } from './jsonl.js';

export interface UploadProblem {
  status: 400 | 413;
  code: 'invalid_file_format' | 'line_too_large' | 'too_many_tasks' | 'empty_file';
  message: string;
}

export interface UploadCheckLimits {
  maxLineBytes: number;
  maxRequests: number;
}

/** How many over-long lines a refusal names. */
const LINES_NAMED = 10;

const decoder = new TextDecoder('utf-8', { fatal: true });
const BOM = [0xef, 0xbb, 0xbf];

function describeByte(byte: number): string {
  const hex = `0x${byte.toString(16).padStart(2, '0')}`;
  return byte >= 0x21 && byte < 0x7f ? `'${String.fromCharCode(byte)}' (${hex})` : hex;
}

export class BatchFileCheck {
  private readonly splitter: JsonlLineSplitter;
  private problem: UploadProblem | undefined;
  private requests = 0;
  private firstChecked = false;
  private readonly longLines: number[] = [];
  private longLineCount = 0;
  private bytes = 0;

  constructor(private readonly limits: UploadCheckLimits) {
    this.splitter = new JsonlLineSplitter({ maxLineBytes: limits.maxLineBytes });
  }

  /** Takes the next bytes; returns the problem as soon as the file is known to be refused. */
  push(chunk: Uint8Array): UploadProblem | undefined {
    if (this.problem) return this.problem;
    const nul = chunk.indexOf(0);
    if (nul >= 0) {
      return (this.problem = {
        status: 400,
        code: 'invalid_file_format',
        message: `The file is not JSONL text: it has a NUL byte at offset ${this.bytes + nul} (a binary file, or text in UTF-16?). Batch input files are UTF-8 JSONL, one JSON request object a line.`,
      });
    }
    if (!this.firstChecked) this.checkStart(chunk);
    this.bytes += chunk.length;
    if (this.problem) return this.problem;
    this.splitter.pushRaw(chunk, this.onLine);
    return this.problem;
  }

  /** The end of the file: the problem, if any. */
  end(): UploadProblem | undefined {
    if (this.problem) return this.problem;
    this.splitter.endRaw(this.onLine);
    if (this.problem) return this.problem;
    if (this.longLineCount > 0) {
      const named = this.longLines.join(', ');
      const more = this.longLineCount > this.longLines.length ? ` and ${this.longLineCount - this.longLines.length} more` : '';
      return (this.problem = {
        status: 413,
        code: 'line_too_large',
        message: `${this.longLineCount === 1 ? 'Line' : 'Lines'} ${named}${more} ${this.longLineCount === 1 ? 'is' : 'are'} longer than the ${this.limits.maxLineBytes} bytes a request line may have (MAX_LINE_BYTES).`,
      });
    }
    if (this.requests > this.limits.maxRequests) {
      return (this.problem = {
        status: 400,
        code: 'too_many_tasks',
        message: `The file has ${this.requests} requests; a batch takes at most ${this.limits.maxRequests} (MAX_REQUESTS_PER_BATCH). Split it into several files.`,
      });
    }
    if (this.requests === 0) {
      return (this.problem = { status: 400, code: 'empty_file', message: 'The file has no requests: it is empty or only blank lines.' });
    }
    return undefined;
  }

  /** The first bytes that are not whitespace (after a BOM) must open a JSON object. */
  private checkStart(chunk: Uint8Array): void {
    for (let i = 0; i < chunk.length; i++) {
      const at = this.bytes + i;
      const byte = chunk[i]!;
      if (at === this.bomBytes && at < 3 && byte === BOM[at]) {
        this.bomBytes++;
        continue;
      }
      if (this.bomBytes > 0 && this.bomBytes < 3) {
        this.firstChecked = true;
        this.refuseStart(0xef, 0); // half a BOM
        return;
      }
      if (byte === 0x20 || byte === 0x09 || byte === 0x0d || byte === 0x0a) continue;
      this.firstChecked = true;
      if (byte !== 0x7b) this.refuseStart(byte, at);
      return;
    }
  }
  /** How many bytes of a UTF-8 BOM the file has started with. */
  private bomBytes = 0;

  private refuseStart(byte: number, at: number): void {
    this.problem = {
      status: 400,
      code: 'invalid_file_format',
      message: `The file is not JSONL: it must start with a JSON object ('{'), but byte ${at} is ${describeByte(byte)}. Batch input files are UTF-8 JSONL, one JSON request object a line.`,
    };
  }

  private readonly onLine: RawLineHandler = (buf, from, to, number, _start, _end, tooLong) => {
    if (tooLong) {
      this.requests++;
      this.longLineCount++;
      if (this.longLines.length < LINES_NAMED) this.longLines.push(number);
      return;
    }
    let blank = true;
    for (let i = from; i < to; i++) {
      const b = buf[i];
      if (b !== 0x20 && b !== 0x09 && b !== 0x0d) {
        blank = false;
        break;
      }
    }
    if (blank) return;
    this.requests++;
    if (this.requests === 1) this.checkFirstLine(buf.subarray(from, to), number);
  };

  private checkFirstLine(bytes: Uint8Array, number: number): void {
    let text: string;
    try {
      text = decoder.decode(bytes);
    } catch {
      this.problem = { status: 400, code: 'invalid_file_format', message: `The file is not UTF-8 text: line ${number} has bytes that are not valid UTF-8.` };
      return;
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      this.problem = { status: 400, code: 'invalid_file_format', message: `The file is not JSONL: line ${number}, its first request, is not valid JSON.` };
      return;
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      this.problem = { status: 400, code: 'invalid_file_format', message: `The file is not JSONL of requests: line ${number}, its first request, is not a JSON object.` };
    }
  }
}
