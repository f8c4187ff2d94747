// Streaming JSONL: split a byte stream into lines with their absolute byte offsets, holding at
// most one line (plus the input chunk being scanned) in memory. Lines are found with
// Buffer.indexOf, so the cost per byte is native; a line that lies wholly inside one input chunk
// is a view of that chunk (no copy), and only a line that spans chunks is joined.

/** One line of a JSONL file. */
export interface JsonlLine {
  /** 1-based line number in the file. */
  number: number;
  /** Absolute byte offset of the line's first byte. */
  start: number;
  /** Absolute byte offset just past the line terminator (exclusive): consecutive lines tile the file. */
  end: number;
  /** The line's content without `\n` / `\r\n` (and without a leading BOM); empty when tooLong. */
  bytes: Buffer;
  /** The content is longer than maxLineBytes; its bytes were skipped, not kept. */
  tooLong: boolean;
}

export interface JsonlReadOptions {
  /** Absolute offset of the first byte of `source` in the file (default 0). */
  offset?: number;
  /** Number of the first line of `source` (default 1). */
  firstLineNumber?: number;
  /** Longest line content kept, in bytes (default: unlimited). */
  maxLineBytes?: number;
}

const LF = 10;
const CR = 13;
const EMPTY = Buffer.alloc(0);

// The line rules, followed by every reader of lines (the splitter below on bytes; the part
// summaries of part-summary.ts on counts of bytes): a line is the bytes before a `\n`, or the
// file's last bytes; its content is that without the `\r` of a `\r\n` and, on the file's first
// line, without a UTF-8 BOM; content longer than maxLineBytes is over-long.

/** A UTF-8 byte order mark. */
export const UTF8_BOM: readonly number[] = [0xef, 0xbb, 0xbf];

/** Where the content of a line's `length` bytes ends: before the `\r` of a `\r\n` (a last line without `\n` keeps its `\r`). */
export function contentEnd(length: number, endsWithCR: boolean, terminated: boolean): number {
  return terminated && endsWithCR ? length - 1 : length;
}

/** Where the content of the file's first line starts: after a whole BOM (`contentEnd` is where it ends). */
export function firstLineContentStart(startsWithBom: boolean, contentEnd: number): number {
  return startsWithBom && contentEnd >= 3 ? 3 : 0;
}

function startsWithBom(buf: Uint8Array, from: number): boolean {
  return buf[from] === UTF8_BOM[0] && buf[from + 1] === UTF8_BOM[1] && buf[from + 2] === UTF8_BOM[2];
}

function asBuffer(chunk: Uint8Array): Buffer {
  return Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}

/**
 * A line as ranges, for hot loops that must not allocate per line: the content is
 * `buf[from, to)` (without `\n` / `\r\n` and a leading BOM); `start`/`end` are absolute offsets
 * in the file as in JsonlLine. `buf` may be the pushed chunk itself: read it before returning.
 * For a line longer than maxLineBytes, `tooLong` is true and `from === to`.
 */
export type RawLineHandler = (buf: Buffer, from: number, to: number, number: number, start: number, end: number, tooLong: boolean) => void;

/**
 * The synchronous core of the reader: push chunks in, get complete lines out through a callback.
 * Lines handed to `emit` may be views of the pushed chunk; copy them if the chunk will be reused.
 */
export class JsonlLineSplitter {
  private readonly maxLineBytes: number;
  /** Whether a BOM at the very start of the file is possible (the source starts at offset 0). */
  private readonly bomPossible: boolean;
  private lineNumber: number;
  private lineStart: number;
  /** Absolute offset of the next byte to be pushed. */
  private position: number;
  /** Pieces of the current line from earlier chunks. */
  private pieces: Buffer[] = [];
  private piecesLength = 0;
  private tooLong = false;

  constructor(options: JsonlReadOptions = {}) {
    const offset = options.offset ?? 0;
    this.maxLineBytes = options.maxLineBytes ?? Number.POSITIVE_INFINITY;
    this.bomPossible = offset === 0;
    this.lineNumber = options.firstLineNumber ?? 1;
    this.lineStart = offset;
    this.position = offset;
  }

  /** Allowance over maxLineBytes while a line is incomplete: a trailing `\r`, and a BOM on the first line. */
  private slack(): number {
    return this.bomPossible && this.lineStart === 0 ? 4 : 1;
  }

  push(chunk: Uint8Array, emit: (line: JsonlLine) => void): void {
    this.pushRaw(chunk, toLine(emit));
  }

  /** Flushes a last line that has no newline. */
  end(emit: (line: JsonlLine) => void): void {
    this.endRaw(toLine(emit));
  }

  /** push(), handing out lines as ranges of a buffer instead of JsonlLine objects. */
  pushRaw(chunk: Uint8Array, emit: RawLineHandler): void {
    const buf = asBuffer(chunk);
    const length = buf.length;
    const base = this.position;
    let i = 0;
    while (i < length) {
      const nl = buf.indexOf(LF, i);
      if (nl === -1) {
        // The line continues in the next chunk.
        if (!this.tooLong) {
          const rest = length - i;
          if (this.piecesLength + rest > this.maxLineBytes + this.slack()) {
            this.tooLong = true;
            this.pieces = [];
            this.piecesLength = 0;
          } else {
            this.pieces.push(i === 0 ? buf : buf.subarray(i));
            this.piecesLength += rest;
          }
        }
        break;
      }
      const end = base + nl + 1;
      if (this.tooLong) {
        emit(EMPTY, 0, 0, this.lineNumber, this.lineStart, end, true);
      } else if (this.piecesLength === 0) {
        // Content up to (not including) the `\n`, then drop a `\r` before it.
        this.emitLine(buf, i, nl, end, true, emit);
      } else if (this.piecesLength + (nl - i) > this.maxLineBytes + this.slack()) {
        emit(EMPTY, 0, 0, this.lineNumber, this.lineStart, end, true); // certainly too long: do not join it
      } else {
        this.pieces.push(buf.subarray(i, nl));
        const joined = Buffer.concat(this.pieces, this.piecesLength + (nl - i));
        this.emitLine(joined, 0, joined.length, end, true, emit);
      }
      this.nextLine(end);
      i = nl + 1;
    }
    this.position = base + length;
  }

  /** end(), handing out the last line as a range. */
  endRaw(emit: RawLineHandler): void {
    if (this.lineStart >= this.position) return;
    const end = this.position;
    if (this.tooLong) {
      emit(EMPTY, 0, 0, this.lineNumber, this.lineStart, end, true);
    } else {
      const bytes = this.pieces.length === 1 ? this.pieces[0]! : Buffer.concat(this.pieces, this.piecesLength);
      this.emitLine(bytes, 0, bytes.length, end, false, emit);
    }
    this.nextLine(end);
  }

  /** The line ended just before `end`: the next one starts there. */
  private nextLine(end: number): void {
    if (this.pieces.length > 0) this.pieces = [];
    this.piecesLength = 0;
    this.tooLong = false;
    this.lineStart = end;
    this.lineNumber++;
  }

  private emitLine(buf: Buffer, from: number, to: number, end: number, terminated: boolean, emit: RawLineHandler): void {
    to = from + contentEnd(to - from, to > from && buf[to - 1] === CR, terminated);
    if (this.bomPossible && this.lineStart === 0) from += firstLineContentStart(startsWithBom(buf, from), to - from);
    if (to - from > this.maxLineBytes) emit(EMPTY, 0, 0, this.lineNumber, this.lineStart, end, true);
    else emit(buf, from, to, this.lineNumber, this.lineStart, end, false);
  }
}

function toLine(emit: (line: JsonlLine) => void): RawLineHandler {
  return (buf, from, to, number, start, end, tooLong) =>
    emit({ number, start, end, bytes: tooLong ? EMPTY : buf.subarray(from, to), tooLong });
}

/**
 * Streams the lines of a JSONL byte stream. `start`/`end` are absolute offsets in the file
 * (`options.offset` is where `source` begins); a last line without a newline is yielded too.
 * A line longer than `maxLineBytes` comes out with `tooLong: true` and empty `bytes`.
 */
export async function* readJsonlLines(source: AsyncIterable<Uint8Array>, options: JsonlReadOptions = {}): AsyncGenerator<JsonlLine> {
  const splitter = new JsonlLineSplitter(options);
  let ready: JsonlLine[] = [];
  const collect = (line: JsonlLine): void => {
    ready.push(line);
  };
  for await (const chunk of source) {
    splitter.push(chunk, collect);
    if (ready.length > 0) {
      const lines = ready;
      ready = [];
      for (const line of lines) yield line;
    }
  }
  splitter.end(collect);
  for (const line of ready) yield line;
}
