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
//
// A file sent in parts (the Uploads API) is checked without reading it again on complete: each
// part is scanned once as it streams in (PartScan, part-summary.ts) into a small summary, the
// summaries are joined in the parts' order (checkJoinedParts), and only the file's first request
// line is read back. For the same bytes, that answers exactly what BatchFileCheck answers when
// given the whole file in one push (a NUL anywhere is told first; a streamed check may meet
// another problem first).
import { JsonlLineSplitter, type RawLineHandler, UTF8_BOM } from './jsonl.js';
import { type FirstRequest, joinSummaries, LINES_NAMED, type SummarizedPart } from './part-summary.js';
import { type DecodeProblem, decodeLine, isBlankRange, isJsonSpace, requestedModel } from './request-line.js';

// The part summaries are part of this module's interface (shared/api and shared/batch import them from here).
export {
  type FirstRequest,
  type LineFragment,
  PartScan,
  type PartSummary,
  type SummarizedPart,
  summaryFits,
} from './part-summary.js';

export interface UploadProblem {
  status: 400 | 413;
  code: 'invalid_file_format' | 'line_too_large' | 'too_many_tasks' | 'empty_file';
  message: string;
}

/** A whole file's check: its problem, or the model its first request names (when it names one). */
export interface FileCheck {
  problem?: UploadProblem;
  model?: string;
}

export interface UploadCheckLimits {
  maxLineBytes: number;
  maxRequests: number;
}

function describeByte(byte: number): string {
  const hex = `0x${byte.toString(16).padStart(2, '0')}`;
  return byte >= 0x21 && byte < 0x7f ? `'${String.fromCharCode(byte)}' (${hex})` : hex;
}

/** Why a file's first request line makes it no JSONL of requests, by the request-line model's decode problem. */
const FIRST_LINE_MESSAGES: Record<DecodeProblem, (line: number) => string> = {
  utf8: (line) => `The file is not UTF-8 text: line ${line} has bytes that are not valid UTF-8.`,
  json: (line) => `The file is not JSONL: line ${line}, its first request, is not valid JSON.`,
  not_object: (line) => `The file is not JSONL of requests: line ${line}, its first request, is not a JSON object.`,
};

function nulProblem(offset: number): UploadProblem {
  return {
    status: 400,
    code: 'invalid_file_format',
    message: `The file is not JSONL text: it has a NUL byte at offset ${offset} (a binary file, or text in UTF-16?). Batch input files are UTF-8 JSONL, one JSON request object a line.`,
  };
}

/** The checks that need the whole file: line lengths, then the number of requests. */
function countsProblem(
  counts: { longLines: readonly number[]; longLineCount: number; requests: number },
  limits: UploadCheckLimits,
): UploadProblem | undefined {
  const { longLines, longLineCount, requests } = counts;
  if (longLineCount > 0) {
    const named = longLines.join(', ');
    const more = longLineCount > longLines.length ? ` and ${longLineCount - longLines.length} more` : '';
    return {
      status: 413,
      code: 'line_too_large',
      message: `${longLineCount === 1 ? 'Line' : 'Lines'} ${named}${more} ${longLineCount === 1 ? 'is' : 'are'} longer than the ${limits.maxLineBytes} bytes a request line may have (MAX_LINE_BYTES).`,
    };
  }
  if (requests > limits.maxRequests) {
    return {
      status: 400,
      code: 'too_many_tasks',
      message: `The file has ${requests} requests; a batch takes at most ${limits.maxRequests} (MAX_REQUESTS_PER_BATCH). Split it into several files.`,
    };
  }
  if (requests === 0) return { status: 400, code: 'empty_file', message: 'The file has no requests: it is empty or only blank lines.' };
  return undefined;
}

export class BatchFileCheck {
  private readonly splitter: JsonlLineSplitter;
  private problem: UploadProblem | undefined;
  private requests = 0;
  private firstChecked = false;
  private readonly longLines: number[] = [];
  private longLineCount = 0;
  private bytes = 0;
  private model: string | undefined;

  /** `from`: where the bytes pushed start in the file (by default, at its start). */
  constructor(
    private readonly limits: UploadCheckLimits,
    from: { offset: number; line: number } = { offset: 0, line: 1 },
  ) {
    this.splitter = new JsonlLineSplitter({ maxLineBytes: limits.maxLineBytes, offset: from.offset, firstLineNumber: from.line });
    this.bytes = from.offset;
  }

  /**
   * The checks of the file's start and of its first request, given the file's bytes from the start
   * of its first request line (the first line that is not blank) to the line's end. When that line
   * is over-long, give the bytes to the file's end: they are read only up to the first byte that is
   * not whitespace.
   */
  static async checkFirstRequest(limits: UploadCheckLimits, first: FirstRequest, bytes: AsyncIterable<Uint8Array>): Promise<FileCheck> {
    const check = new BatchFileCheck(limits, { offset: first.start, line: first.line });
    for await (const chunk of bytes) {
      if (check.push(chunk)) return { problem: check.problem };
      if (first.tooLong && check.firstChecked) return {};
    }
    check.splitter.endRaw(check.onLine);
    return check.problem ? { problem: check.problem } : { ...(check.model !== undefined ? { model: check.model } : {}) };
  }

  /** Takes the next bytes; returns the problem as soon as the file is known to be refused. */
  push(chunk: Uint8Array): UploadProblem | undefined {
    if (this.problem) return this.problem;
    const nul = chunk.indexOf(0);
    if (nul >= 0) {
      this.problem = nulProblem(this.bytes + nul);
      return this.problem;
    }
    if (!this.firstChecked) this.checkStart(chunk);
    this.bytes += chunk.length;
    if (this.problem) return this.problem;
    this.splitter.pushRaw(chunk, this.onLine);
    return this.problem;
  }

  /** Request lines seen so far (all of them once `end` found no problem). */
  get requestCount(): number {
    return this.requests;
  }

  /** The model the first request names, once it is read (a create checks its route's quota by it). */
  get firstModel(): string | undefined {
    return this.model;
  }

  /** The end of the file: the problem, if any. */
  end(): UploadProblem | undefined {
    if (this.problem) return this.problem;
    this.splitter.endRaw(this.onLine);
    if (this.problem) return this.problem;
    this.problem = countsProblem({ longLines: this.longLines, longLineCount: this.longLineCount, requests: this.requests }, this.limits);
    return this.problem;
  }

  /** The first bytes that are not whitespace (after a BOM) must open a JSON object. */
  private checkStart(chunk: Uint8Array): void {
    for (let i = 0; i < chunk.length; i++) {
      const at = this.bytes + i;
      const byte = chunk[i]!;
      if (at === this.bomBytes && at < 3 && byte === UTF8_BOM[at]) {
        this.bomBytes++;
        continue;
      }
      if (this.bomBytes > 0 && this.bomBytes < 3) {
        this.firstChecked = true;
        this.refuseStart(0xef, 0); // half a BOM
        return;
      }
      if (isJsonSpace(byte)) continue;
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
    if (isBlankRange(buf, from, to)) return;
    this.requests++;
    if (this.requests === 1) this.checkFirstLine(buf.subarray(from, to), number);
  };

  private checkFirstLine(bytes: Uint8Array, number: number): void {
    const decoded = decodeLine(bytes);
    if (!decoded.ok) this.problem = { status: 400, code: 'invalid_file_format', message: FIRST_LINE_MESSAGES[decoded.problem](number) };
    else this.model = requestedModel(decoded.value);
  }
}

/**
 * The checks of the file the parts make, in order, from their summaries: what BatchFileCheck
 * would answer for the joined bytes. `read(start, end)` reads bytes of the joined file: only its
 * first request line is read (at most maxLineBytes and a few bytes, unless that line is too long).
 */
export async function checkJoinedParts(
  parts: readonly SummarizedPart[],
  limits: UploadCheckLimits,
  read: (start: number, end: number) => AsyncIterable<Uint8Array>,
): Promise<FileCheck> {
  const joined = joinSummaries(parts, limits.maxLineBytes);
  if (joined.nul >= 0) return { problem: nulProblem(joined.nul) };
  const first = joined.firstRequest;
  const checked = first
    ? await BatchFileCheck.checkFirstRequest(limits, first, read(first.start, first.tooLong ? joined.bytes : first.end))
    : {};
  if (checked.problem) return checked;
  const problem = countsProblem(joined, limits);
  return problem ? { problem } : checked;
}
