// Summaries of the parts of a file sent in parts (the Uploads API): each part is scanned once as
// it streams in (PartScan) into a few numbers, and the summaries joined in the parts' order tell
// the lines of the whole file (joinSummaries), judged by the same line rules as JsonlLineSplitter
// (jsonl.ts). upload-check.ts checks the joined file from them, reading back only its first request.
import { contentEnd, firstLineContentStart, UTF8_BOM } from './jsonl.js';
import { isBlankByte } from './request-line.js';

/** How many over-long lines a refusal names. */
export const LINES_NAMED = 10;

const LF = 0x0a;
const CR = 0x0d;

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

  constructor(private readonly limits: { maxLineBytes: number }) {}

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
          if (!isBlankByte(buf[i]!)) {
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
      const tooLong = contentEnd(this.lineBytes, this.lineEndsWithCR, true) > this.limits.maxLineBytes;
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
export function summaryFits(summary: PartSummary | undefined, limits: { maxLineBytes: number }): summary is PartSummary {
  return summary !== undefined && (summary.maxLineBytes ?? Number.POSITIVE_INFINITY) === limits.maxLineBytes;
}

export interface SummarizedPart {
  bytes: number;
  summary: PartSummary;
}

/** The file the parts make, as far as the checks are concerned: its size, and what a part's summary says of its lines. */
export type JoinedSummary = Pick<PartSummary, 'nul' | 'requests' | 'firstRequest' | 'longLines' | 'longLineCount'> & { bytes: number };

/**
 * The lines of the joined file from the parts' summaries: a line that crosses parts is the tail of
 * one part, the whole of any parts without a `\n`, and the head of the next part with one; it is
 * judged as JsonlLineSplitter would (CR before the `\n` and a BOM at the file's start dropped).
 */
export function joinSummaries(parts: readonly SummarizedPart[], maxLineBytes: number): JoinedSummary {
  const lead = parts.flatMap((part) => part.summary.lead).slice(0, 3);
  const bom = lead.length === 3 && lead.every((byte, i) => byte === UTF8_BOM[i]);
  const joined: JoinedSummary = { bytes: 0, nul: -1, requests: 0, firstRequest: null, longLines: [], longLineCount: 0 };
  let line = { start: 0, number: 1, bytes: 0, lastNonBlank: -1, endsWithCR: false };
  const extend = (fragment: LineFragment) => {
    if (fragment.lastNonBlank >= 0) line.lastNonBlank = line.bytes + fragment.lastNonBlank;
    if (fragment.bytes > 0) line.endsWithCR = fragment.endsWithCR;
    line.bytes += fragment.bytes;
  };
  const close = (end: number, terminated: boolean) => {
    const to = contentEnd(line.bytes, line.endsWithCR, terminated);
    const from = line.start === 0 ? firstLineContentStart(bom, to) : 0;
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
