// The errors of a file that fails validation, and how many of them a batch record holds.
//
// Validation counts every bad line, keeps the first maxErrors (what an error file can hold), and
// the batch record takes those that fit in RECORD_ERRORS_BYTES. Bytes, not entries, because the
// record is a DynamoDB item (400 KB at most, and every read of it is billed per 4 KB): 1,000 errors
// quoting long CJK model names made a 571 KiB item that DynamoDB refused.
import type { BatchLineError } from '../batch/model.js';

/**
 * The most bytes of errors (as a JSON array) a batch record holds: 32 KiB, 200 to 300 errors of
 * 110-160 bytes, or about 110 that quote two long CJK model names. It leaves the item far below
 * DynamoDB's 400 KB with everything else a batch keeps (metadata up to ~9 KB, chunk bookkeeping
 * up to ~20 KB), a page of 100 failed batches (`GET /v1/batches?limit=100`) under 3.5 MB (Lambda's
 * response limit is 6 MB), and a read of the item at 8 read units. JSON counts more bytes than
 * DynamoDB does for the same list of maps (quotes, colons, commas), so the bound holds there too.
 */
export const RECORD_ERRORS_BYTES = 32 * 1024;

/** The bytes `error` adds to a JSON array of errors (its comma included). */
function jsonBytes(error: BatchLineError): number {
  return Buffer.byteLength(JSON.stringify(error)) + 1;
}

/** The longest run of `errors`, from the first, whose JSON array takes at most `maxBytes`. */
export function errorsWithin(errors: readonly BatchLineError[], maxBytes: number): BatchLineError[] {
  let bytes = 2; // []
  let count = 0;
  for (const error of errors) {
    bytes += jsonBytes(error);
    if (bytes - 1 > maxBytes) break; // the last one has no comma
    count++;
  }
  return errors.slice(0, count);
}

/** Collects a file's errors: counts all of them, keeps the first `maxErrors`. */
export class ErrorCollector {
  private readonly kept: BatchLineError[] = [];
  private found = 0;
  private exact = true;

  constructor(private readonly maxErrors: number) {}

  report(error: BatchLineError): void {
    this.found++;
    if (this.kept.length < this.maxErrors) this.kept.push(error);
  }

  /** Whether any error was reported. */
  get any(): boolean {
    return this.found > 0;
  }

  /** How many errors were found: all of them when `countIsExact`, else at least that many. */
  get count(): number {
    return this.found;
  }

  get countIsExact(): boolean {
    return this.exact;
  }

  /**
   * Adds errors found later for lines already seen (confirmed duplicates), in line order with
   * the rest: a duplicate is its line's first problem, so it replaces whatever else that line had.
   * `newLines`: how many duplicates there are on lines that had no error yet (the others are
   * counted); `complete`: false when not every duplicate was looked for.
   */
  merge(lineErrors: readonly BatchLineError[], newLines: number, complete: boolean): void {
    this.exact &&= complete;
    this.found += newLines;
    if (lineErrors.length === 0) return;
    const lines = new Set(lineErrors.map((error) => error.line));
    const others = this.kept.filter((error) => error.code === 'too_many_tasks' || error.line === null || !lines.has(error.line));
    const merged = [...others, ...lineErrors]
      .map((error, order) => ({ error, order }))
      .sort((a, b) => (a.error.line ?? Infinity) - (b.error.line ?? Infinity) || a.order - b.order)
      .slice(0, this.maxErrors)
      .map(({ error }) => error);
    this.kept.splice(0, this.kept.length, ...merged);
  }

  /** The errors kept (the first maxErrors), in line order. */
  get errors(): BatchLineError[] {
    return this.kept;
  }
}

/** Where the errors a batch record does not hold are: its error file, and how many errors that has. */
export interface ErrorFile {
  id: string;
  errors: number;
}

const count = (n: number) => n.toLocaleString('en-US');

/**
 * The entry that ends a batch record's errors when they are not all of the file's: how many
 * there are, and where to find more (the batch's error file, with the first maxErrors).
 */
export function moreErrorsNotice(listed: number, found: { count: number; exact: boolean }, errorFile?: ErrorFile): BatchLineError {
  const of = `${found.exact ? '' : 'at least '}${count(found.count)}`;
  let where = '';
  if (errorFile) {
    const filed =
      errorFile.errors === found.count && found.exact ? `all ${count(errorFile.errors)}` : `the first ${count(errorFile.errors)}`;
    where = `; ${filed} are in the error file ${errorFile.id} (error_file_id)`;
  }
  return {
    code: 'too_many_errors',
    message: `The file has ${of} errors: the first ${count(listed)} are listed here${where}.`,
    param: null,
    line: null,
  };
}
