// Validation of a batch input file in one streaming pass, and the chunk plan of a valid file.
// Every bad line is reported with its line number (all are counted, the first maxErrors kept);
// nothing is sent upstream for a file that fails. A valid file is cut into chunks by byte range
// (chunk-plan.ts), so that workers can read their share of the file without the rest.
//
// Speed: most lines take the fast path (fast-line.ts: one allocation-free scan of the bytes, no
// JSON.parse); a line it is not sure about takes the slow path (request-line.ts: JSON.parse and
// the checks on the object), which also words every error. Both make the same decisions.
//
// What is tolerated: a UTF-8 BOM at the start of the file, CRLF line endings, blank lines (empty
// or only spaces, tabs and CRs: skipped, not counted), no newline after the last line, and
// duplicate keys in a line's JSON (the last one wins, as in JSON.parse). Everything else that is
// not a well-formed request is an error with its line number.
import { randomBytes } from 'node:crypto';
import type { BatchLineError, ChunkPlanEntry } from '../batch/model.js';
import { ChunkPlanner, DEFAULT_MAX_CHUNKS } from './chunk-plan.js';
import { type CustomIdHasher, customIdHasher, HashSet64, hashOut } from './custom-id-hash.js';
import { confirmDuplicates, SuspectList } from './duplicates.js';
import { type FastLine, type FastLineExpectations, fastLineExpectations, scanRequestLine } from './fast-line.js';
import { JsonlLineSplitter, type RawLineHandler } from './jsonl.js';
import { fileErrors, inspectRequestLine, isBlankRange, normalizeEndpoint, rangeEquals } from './request-line.js';
import { ErrorCollector, errorsWithin, RECORD_ERRORS_BYTES } from './validation-errors.js';

// shared/api imports normalizeEndpoint from here; it belongs to the request-line model.
export { normalizeEndpoint };

export interface ValidationOptions {
  /** The batch's endpoint, e.g. "/v1/chat/completions" (a "/v4/..." path is accepted as its /v1 equivalent). */
  endpoint: string;
  maxRequests: number;
  maxLineBytes: number;
  /** How many errors are kept; further bad lines are counted but not reported. */
  maxErrors: number;
  /** The most bytes (as a JSON array) of the errors the result's `errors` holds (default RECORD_ERRORS_BYTES). */
  maxErrorBytes?: number;
  chunkMaxRequests: number;
  chunkMaxBytes: number;
  /**
   * The most chunks a plan may have (default DEFAULT_MAX_CHUNKS); a longer plan has runs of
   * consecutive chunks merged. The batch record keeps an entry per chunk (doneChunks,
   * chunkAttempts: about 20 bytes each), and a DynamoDB item holds at most 400 KB.
   */
  maxChunks?: number;
  /**
   * Streams the same bytes again from the start. Needed only when custom_id hashes repeat: the
   * suspected duplicates are then confirmed exactly by re-reading the file.
   */
  reread?: () => AsyncIterable<Uint8Array> | Promise<AsyncIterable<Uint8Array>>;
  /** The seed of the custom_id hash (random when unset). */
  hashSeed?: number;
  /** Tests only: a 2-bit custom_id hash, so that collisions happen and must be told apart. */
  weakHashForTests?: boolean;
}

export type ValidationResult =
  | { ok: true; model: string; total: number; chunks: ChunkPlanEntry[] }
  | {
      ok: false;
      total: number;
      /** The first errors, as many as fit in maxErrorBytes: what the batch record holds. */
      errors: BatchLineError[];
      /** Every error kept, up to maxErrors, in line order: what an error file can hold. */
      reportedErrors: BatchLineError[];
      /** How many errors the file has; at least that many when not `errorCountIsExact`. */
      errorCount: number;
      /** False when duplicate custom_ids beyond the first maxErrors were not looked for. */
      errorCountIsExact: boolean;
    };

/**
 * Validates a batch input file in one streaming pass and, when it is valid, plans its chunks.
 * Each bad line gets one error (its first problem); `total` counts request (non-blank) lines.
 *
 * Memory does not grow with the file, only with its number of requests, by 8-16 bytes each:
 * custom_ids are kept as seeded 64-bit hashes. A repeated hash makes a line a suspected
 * duplicate; after the pass, suspects are confirmed exactly by re-reading the file
 * (`options.reread`, duplicates.ts), so a hash collision never reports a false duplicate.
 */
export async function validateBatchInput(source: AsyncIterable<Uint8Array>, options: ValidationOptions): Promise<ValidationResult> {
  const pass = new ValidationPass(options);
  const splitter = new JsonlLineSplitter({ maxLineBytes: options.maxLineBytes });
  for await (const chunk of source) splitter.pushRaw(chunk, pass.onLine);
  splitter.endRaw(pass.onLine);
  return pass.finish();
}

/** The state of one validation pass over a file, fed line by line. */
class ValidationPass {
  private readonly endpoint: string;
  private readonly expect: FastLineExpectations;
  private readonly hasher: CustomIdHasher;
  private readonly errors: ErrorCollector;
  /** The chunk plan; dropped once the file is known to be invalid. */
  private readonly planner: ChunkPlanner;
  private readonly ids = new HashSet64();
  private readonly suspects = new SuspectList();
  private readonly fast: FastLine = { idFrom: 0, idTo: 0, modelFrom: 0, modelTo: 0 };
  /** The batch's model: the first valid line's, and its line. */
  private model: string | undefined;
  /** The model's UTF-8 bytes, compared with a fast-path line's raw bytes; empty when it has none (a lone surrogate). */
  private modelBytes: Buffer | undefined;
  private modelLine = 0;
  private total = 0;

  constructor(private readonly options: ValidationOptions) {
    this.endpoint = normalizeEndpoint(options.endpoint);
    this.expect = fastLineExpectations(this.endpoint);
    this.hasher = customIdHasher(options.hashSeed ?? randomBytes(4).readUInt32LE(0), options.weakHashForTests);
    this.errors = new ErrorCollector(options.maxErrors);
    this.planner = new ChunkPlanner(options.chunkMaxRequests, options.chunkMaxBytes);
  }

  readonly onLine: RawLineHandler = (buf, from, to, n, start, end, tooLong) => {
    if (tooLong) {
      this.countRequest(n);
      this.report(fileErrors.lineTooLarge(n, this.options.maxLineBytes));
      return;
    }
    if (isBlankRange(buf, from, to)) return;
    this.countRequest(n);
    const accepted = scanRequestLine(buf, from, to, this.expect, this.fast) ? this.checkFast(buf, n) : this.checkSlowly(buf, from, to, n);
    if (accepted && !this.errors.any) this.planner.add(start, end);
  };

  async finish(): Promise<ValidationResult> {
    const { options, errors, total } = this;
    if (total === 0) this.report(fileErrors.emptyFile());
    if (this.suspects.length > 0) {
      if (!options.reread) throw new Error('validateBatchInput: confirming suspected duplicate custom_ids needs options.reread');
      const duplicates = await confirmDuplicates(this.suspects, {
        endpoint: this.endpoint,
        expect: this.expect,
        hasher: this.hasher,
        maxRequests: options.maxRequests,
        maxLineBytes: options.maxLineBytes,
        maxErrors: options.maxErrors,
        reread: options.reread,
      });
      errors.merge(duplicates.errors, duplicates.newLines, duplicates.complete);
    }
    if (errors.any || this.model === undefined) {
      const reportedErrors = errors.errors;
      const recorded = errorsWithin(reportedErrors, options.maxErrorBytes ?? RECORD_ERRORS_BYTES);
      return { ok: false, total, errors: recorded, reportedErrors, errorCount: errors.count, errorCountIsExact: errors.countIsExact };
    }
    return { ok: true, model: this.model, total, chunks: this.planner.plan(options.maxChunks ?? DEFAULT_MAX_CHUNKS) };
  }

  private report(error: BatchLineError): void {
    if (!this.errors.any) this.planner.drop(); // no plan for an invalid file
    this.errors.report(error);
    if (error.line !== null) this.suspects.noteError(error.line);
  }

  private countRequest(n: number): void {
    this.total++;
    if (this.total === this.options.maxRequests + 1) this.report(fileErrors.tooManyTasks(n, this.options.maxRequests));
  }

  /** Remembers the custom_id hashed into hashOut; a hash seen before makes line n a suspect. */
  private noteId(n: number): void {
    // Only the first maxRequests requests are remembered: the table stays bounded by the limit.
    const { h1, h2 } = hashOut;
    const seen = this.total <= this.options.maxRequests ? this.ids.add(h1, h2) : this.ids.has(h1, h2);
    if (seen) this.suspects.push(n, h1, h2);
  }

  /** A line the fast path accepted: its custom_id and model are byte ranges in `fast`. */
  private checkFast(buf: Buffer, n: number): boolean {
    const { idFrom, idTo, modelFrom, modelTo } = this.fast;
    this.hasher.bytes(buf, idFrom, idTo);
    this.noteId(n);
    if (this.modelBytes === undefined) {
      this.model = buf.toString('utf8', modelFrom, modelTo);
      this.modelBytes = Buffer.from(this.model);
      this.modelLine = n;
    } else if (!rangeEquals(buf, modelFrom, modelTo, this.modelBytes)) {
      this.report(fileErrors.modelMismatch(n, buf.toString('utf8', modelFrom, modelTo), this.model!, this.modelLine));
      return false;
    }
    return true;
  }

  /** A line the fast path was not sure of: the request-line model decides, and words its error. */
  private checkSlowly(buf: Buffer, from: number, to: number, n: number): boolean {
    const inspected = inspectRequestLine(n, buf.subarray(from, to), this.endpoint);
    if (inspected.customId !== undefined) {
      this.hasher.text(inspected.customId);
      this.noteId(n);
    }
    if (inspected.error) {
      this.report(inspected.error);
      return false;
    }
    const lineModel = inspected.model!;
    if (this.model === undefined) {
      this.model = lineModel;
      // A model with a lone surrogate (from an escape) has no UTF-8 form: no fast-path line matches it.
      this.modelBytes = Buffer.from(lineModel);
      if (this.modelBytes.toString('utf8') !== lineModel) this.modelBytes = Buffer.alloc(0);
      this.modelLine = n;
    } else if (lineModel !== this.model) {
      this.report(fileErrors.modelMismatch(n, lineModel, this.model, this.modelLine));
      return false;
    }
    return true;
  }
}
