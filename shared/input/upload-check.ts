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
// part is scanned once as it streams in (PartScan) into a small summary, the summaries are joined
// in the parts' order (checkJoinedParts), and only the file's first request line is read back.
// For the same bytes, that answers exactly what BatchFileCheck answers when given the whole file
// in one push (a NUL anywhere is told first; a streamed check may meet another problem first).
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
const LF = 0x0a;
const CR = 0x0d;

function describeByte(byte: number): string {
  const hex = `0x${byte.toString(16).padStart(2, '0')}`;
  return byte >= 0x21 && byte < 0x7f ? `'${String.fromCharCode(byte)}' (${hex})` : hex;
}

/** Whitespace a blank line may hold (a line's `\n` is not part of it). */
function isBlank(byte: number): boolean {
  return byte === 0x20 || byte === 0x09 || byte === 0x0d;
}

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
  static async firstRequestProblem(
    limits: UploadCheckLimits,
    first: FirstRequest,
    bytes: AsyncIterable<Uint8Array>,
  ): Promise<UploadProblem | undefined> {
    const check = new BatchFileCheck(limits, { offset: first.start, line: first.line });
    for await (const chunk of bytes) {
      if (check.push(chunk)) return check.problem;
      if (first.tooLong && check.firstChecked) return undefined;
    }
    check.splitter.endRaw(check.onLine);
    return check.problem;
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
      if (!isBlank(buf[i]!)) {
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
      this.problem = {
        status: 400,
        code: 'invalid_file_format',
        message: `The file is not UTF-8 text: line ${number} has bytes that are not valid UTF-8.`,
      };
      return;
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      this.problem = {
        status: 400,
        code: 'invalid_file_format',
        message: `The file is not JSONL: line ${number}, its first request, is not valid JSON.`,
      };
      return;
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      this.problem = {
        status: 400,
        code: 'invalid_file_format',
        message: `The file is not JSONL of requests: line ${number}, its first request, is not a JSON object.`,
      };
    }
  }
}

/** The file's first request line: its number and bytes [start, end), `\n` included. */
export interface FirstRequest {
  line: number;
  start: number;
  end: number;
  /** Longer than maxLineBytes: it counts as a request, but is not parsed. */
  tooLong: boolean;
}

/** Bytes of a part that belong to a line begun or ended in another part. */
export interface LineFragment {
  bytes: number;
  /** Index of the last byte that is not blank (space, tab, CR), or -1. */
  lastNonBlank: number;
  /** The last byte is a CR (dropped if the line's `\n` follows, maybe in the next part). */
  endsWithCR: boolean;
}

/**
 * What the checks need of one part of a file, whatever parts come before and after it: a few
 * numbers, at most LINES_NAMED line numbers. A part's lines are numbered from 0, the line its
 * first bytes belong to; the file's line numbers come from joining the parts in order.
 */
export interface PartSummary {
  /** The maxLineBytes the part was scanned with (null: none); its over-long lines depend on it. */
  maxLineBytes: number | null;
  /** Offset of the part's first NUL byte, or -1. */
  nul: number;
  newlines: number;
  /** The part's first bytes, up to 3: a BOM, or part of one, if the part comes first. */
  lead: number[];
  /** The bytes before the first `\n` (all of them if there is none), and after the last `\n`. */
  head: LineFragment;
  tail: LineFragment;
  /** The requests among the lines between the first and the last `\n`: not blank, or over-long. */
  requests: number;
  /** The first of those requests, in the part's numbers and offsets. */
  firstRequest: FirstRequest | null;
  /** The first over-long lines among those, and how many there are. */
  longLines: number[];
  longLineCount: number;
}

const NO_FRAGMENT: LineFragment = { bytes: 0, lastNonBlank: -1, endsWithCR: false };

/** Scans one part as it streams in, for its PartSummary. */
export class PartScan {
  private bytes = 0;
  private nul = -1;
  private newlines = 0;
  private readonly lead: number[] = [];
  private head: LineFragment | undefined;
  private requests = 0;
  private firstRequest: FirstRequest | null = null;
  private readonly longLines: number[] = [];
  private longLineCount = 0;
  // The line being read: where it starts in the part, and its fragment so far.
  private lineStart = 0;
  private lineBytes = 0;
  private lineLastNonBlank = -1;
  private lineEndsWithCR = false;

  constructor(private readonly limits: Pick<UploadCheckLimits, 'maxLineBytes'>) {}

  push(chunk: Uint8Array): void {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    if (this.nul < 0) {
      const nul = buf.indexOf(0);
      if (nul >= 0) this.nul = this.bytes + nul;
    }
    for (let i = 0; this.lead.length < 3 && i < buf.length; i++) this.lead.push(buf[i]!);
    let from = 0;
    for (;;) {
      const nl = buf.indexOf(LF, from);
      const to = nl < 0 ? buf.length : nl;
      if (to > from) {
        for (let i = to - 1; i >= from; i--) {
          if (!isBlank(buf[i]!)) {
            this.lineLastNonBlank = this.lineBytes + (i - from);
            break;
          }
        }
        this.lineBytes += to - from;
        this.lineEndsWithCR = buf[to - 1] === CR;
      }
      if (nl < 0) break;
      this.endLine(this.bytes + nl + 1);
      from = nl + 1;
    }
    this.bytes += buf.length;
  }

  end(): PartSummary {
    const open: LineFragment = { bytes: this.lineBytes, lastNonBlank: this.lineLastNonBlank, endsWithCR: this.lineEndsWithCR };
    return {
      maxLineBytes: Number.isFinite(this.limits.maxLineBytes) ? this.limits.maxLineBytes : null,
      nul: this.nul,
      newlines: this.newlines,
      lead: [...this.lead],
      head: this.head ?? open,
      tail: this.head ? open : NO_FRAGMENT,
      requests: this.requests,
      firstRequest: this.firstRequest,
      longLines: [...this.longLines],
      longLineCount: this.longLineCount,
    };
  }

  /** The `\n` before `end` ends the line being read. */
  private endLine(end: number): void {
    if (!this.head) {
      this.head = { bytes: this.lineBytes, lastNonBlank: this.lineLastNonBlank, endsWithCR: this.lineEndsWithCR };
    } else {
      // A line wholly inside the part: never the file's first, so no BOM to drop.
      const tooLong = this.lineBytes - (this.lineEndsWithCR ? 1 : 0) > this.limits.maxLineBytes;
      if (tooLong || this.lineLastNonBlank >= 0) {
        this.requests++;
        this.firstRequest ??= { line: this.newlines, start: this.lineStart, end, tooLong };
      }
      if (tooLong) {
        this.longLineCount++;
        if (this.longLines.length < LINES_NAMED) this.longLines.push(this.newlines);
      }
    }
    this.newlines++;
    this.lineStart = end;
    this.lineBytes = 0;
    this.lineLastNonBlank = -1;
    this.lineEndsWithCR = false;
  }
}

/** Whether a part's summary can stand for its bytes under these limits. */
export function summaryFits(summary: PartSummary | undefined, limits: UploadCheckLimits): summary is PartSummary {
  return summary !== undefined && (summary.maxLineBytes ?? Number.POSITIVE_INFINITY) === limits.maxLineBytes;
}

export interface SummarizedPart {
  bytes: number;
  summary: PartSummary;
}

/** The file the parts make, as far as the checks are concerned. */
interface JoinedSummary {
  bytes: number;
  nul: number;
  requests: number;
  firstRequest: FirstRequest | null;
  longLines: number[];
  longLineCount: number;
}

/**
 * The lines of the joined file from the parts' summaries: a line that crosses parts is the tail of
 * one part, the whole of any parts without a `\n`, and the head of the next part with one; it is
 * judged as JsonlLineSplitter would (CR before the `\n` and a BOM at the file's start dropped).
 */
function joinSummaries(parts: readonly SummarizedPart[], maxLineBytes: number): JoinedSummary {
  const lead = parts.flatMap((part) => part.summary.lead).slice(0, 3);
  const bom = lead.length === 3 && lead.every((byte, i) => byte === BOM[i]);
  const joined: JoinedSummary = { bytes: 0, nul: -1, requests: 0, firstRequest: null, longLines: [], longLineCount: 0 };
  let line = { start: 0, number: 1, bytes: 0, lastNonBlank: -1, endsWithCR: false };
  const extend = (fragment: LineFragment) => {
    if (fragment.lastNonBlank >= 0) line.lastNonBlank = line.bytes + fragment.lastNonBlank;
    if (fragment.bytes > 0) line.endsWithCR = fragment.endsWithCR;
    line.bytes += fragment.bytes;
  };
  const close = (end: number, terminated: boolean) => {
    const to = terminated && line.endsWithCR ? line.bytes - 1 : line.bytes;
    const from = line.start === 0 && bom && to >= 3 ? 3 : 0;
    const tooLong = to - from > maxLineBytes;
    if (!tooLong && line.lastNonBlank < from) return; // blank
    joined.requests++;
    joined.firstRequest ??= { line: line.number, start: line.start, end, tooLong };
    if (tooLong) {
      joined.longLineCount++;
      if (joined.longLines.length < LINES_NAMED) joined.longLines.push(line.number);
    }
  };
  for (const { bytes, summary } of parts) {
    const at = joined.bytes;
    if (joined.nul < 0 && summary.nul >= 0) joined.nul = at + summary.nul;
    extend(summary.head);
    if (summary.newlines > 0) {
      close(at + summary.head.bytes + 1, true);
      const number = line.number;
      joined.requests += summary.requests;
      const first = summary.firstRequest;
      if (first)
        joined.firstRequest ??= { line: number + first.line, start: at + first.start, end: at + first.end, tooLong: first.tooLong };
      for (const index of summary.longLines) if (joined.longLines.length < LINES_NAMED) joined.longLines.push(number + index);
      joined.longLineCount += summary.longLineCount;
      line = { start: at + bytes - summary.tail.bytes, number: number + summary.newlines, bytes: 0, lastNonBlank: -1, endsWithCR: false };
      extend(summary.tail);
    }
    joined.bytes = at + bytes;
  }
  if (line.bytes > 0) close(joined.bytes, false);
  return joined;
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
): Promise<UploadProblem | undefined> {
  const joined = joinSummaries(parts, limits.maxLineBytes);
  if (joined.nul >= 0) return nulProblem(joined.nul);
  const first = joined.firstRequest;
  if (first) {
    const problem = await BatchFileCheck.firstRequestProblem(limits, first, read(first.start, first.tooLong ? joined.bytes : first.end));
    if (problem) return problem;
  }
  return countsProblem(joined, limits);
}
