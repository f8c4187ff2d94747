// Validation of a batch input file in one streaming pass, and the chunk plan of a valid file.
// Every bad line is reported with its line number (up to maxErrors entries); nothing is sent
// upstream for a file that fails. A valid file is cut into chunks by byte range, so that workers
// can read their share of the file without the rest.
//
// Speed: most lines take the fast path (fast-line.ts: one allocation-free scan of the bytes, no
// JSON.parse); a line it is not sure about takes the slow path (JSON.parse and the checks on the
// object), which also words every error. Both make the same decisions.
//
// What is tolerated: a UTF-8 BOM at the start of the file, CRLF line endings, blank lines (empty
// or only spaces, tabs and CRs: skipped, not counted), no newline after the last line, and
// duplicate keys in a line's JSON (the last one wins, as in JSON.parse). Everything else that is
// not a well-formed request is an error with its line number.
import { randomBytes } from 'node:crypto';
import type { BatchLineError, ChunkPlanEntry } from '../batch/model.js';
import { type FastLine, type FastLineExpectations, HashSet64, hashBytes, hashOut, MAX_JSON_DEPTH, scanRequestLine } from './fast-line.js';
import { JsonlLineSplitter, type RawLineHandler } from './jsonl.js';

export interface ValidationOptions {
  /** The batch's endpoint, e.g. "/v1/chat/completions" (a "/v4/..." path is accepted as its /v1 equivalent). */
  endpoint: string;
  maxRequests: number;
  maxLineBytes: number;
  /** How many errors are kept; further bad lines are counted but not reported. */
  maxErrors: number;
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
  | { ok: false; errors: BatchLineError[]; total: number };

/** The error codes validation reports (BatchError.code). */
export const VALIDATION_CODES = [
  'invalid_json_line',
  'missing_custom_id',
  'invalid_custom_id',
  'duplicate_custom_id',
  'invalid_method',
  'missing_url',
  'url_mismatch',
  'missing_body',
  'missing_model',
  'model_mismatch',
  'stream_not_supported',
  'line_too_large',
  'too_many_tasks',
  'empty_file',
  'json_too_deep',
  'number_out_of_range',
] as const;
export type ValidationCode = (typeof VALIDATION_CODES)[number];

/** Maps Zhipu-style "/v4/x" paths to their OpenAI "/v1/x" equivalent; other paths are unchanged. */
export function normalizeEndpoint(path: string): string {
  return path.startsWith('/v4/') ? `/v1/${path.slice(4)}` : path;
}

/** A parsed request line of a batch input file. */
export interface BatchRequestLine {
  custom_id: string;
  method: string;
  url: string;
  body: Record<string, unknown>;
}

const SPACE = 0x20;
const TAB = 0x09;
const CR = 0x0d;
const OPEN_BRACE = 0x7b;

/** True for an empty line or one of only spaces, tabs and carriage returns: such lines are skipped. */
export function isBlankLine(bytes: Uint8Array): boolean {
  const first = bytes[0];
  if (first === undefined) return true;
  if (first === OPEN_BRACE) return false; // the usual case, decided at once
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (b !== SPACE && b !== TAB && b !== CR) return false;
  }
  return true;
}

const decoder = new TextDecoder('utf-8', { fatal: true });

type Decoded = { ok: true; value: Record<string, unknown> } | { ok: false; reason: 'utf8' | 'json' | 'not_object'; kind?: string };

function decodeObject(bytes: Uint8Array): Decoded {
  let text: string;
  try {
    text = decoder.decode(bytes);
  } catch {
    return { ok: false, reason: 'utf8' };
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, reason: 'json' };
  }
  if (!isPlainObject(value)) return { ok: false, reason: 'not_object', kind: describeKind(value) };
  return { ok: true, value };
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function describeKind(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return 'a string';
  if (typeof value === 'number') return 'a number';
  if (typeof value === 'boolean') return 'a boolean';
  return typeof value;
}

/** A value quoted for a message, cut short so that errors stay small. */
function show(value: unknown): string {
  if (value === undefined) return 'undefined';
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/**
 * Parses one non-blank line of an input file that has passed validation (the worker reads its
 * chunk by byte range and needs custom_id, url and body of each request). Checks shapes only.
 */
export function parseRequestLine(bytes: Uint8Array): { ok: true; request: BatchRequestLine } | { ok: false; reason: string } {
  const decoded = decodeObject(bytes);
  if (!decoded.ok) {
    return {
      ok: false,
      reason: decoded.reason === 'utf8' ? 'not valid UTF-8' : decoded.reason === 'json' ? 'not valid JSON' : 'not a JSON object',
    };
  }
  const { custom_id, method, url, body } = decoded.value;
  if (typeof custom_id !== 'string' || custom_id === '') return { ok: false, reason: 'custom_id is not a non-empty string' };
  if (typeof url !== 'string') return { ok: false, reason: 'url is not a string' };
  if (!isPlainObject(body)) return { ok: false, reason: 'body is not an object' };
  return { ok: true, request: { custom_id, method: typeof method === 'string' ? method : 'POST', url, body } };
}

/** Checks one request line; returns the error for it, or the parts validation keeps. */
function checkRequest(
  line: number,
  request: Record<string, unknown>,
  endpoint: string,
): { error: BatchLineError; customId: string | undefined } | { error: undefined; customId: string; model: string } {
  const err = (code: ValidationCode, param: string | null, message: string): BatchLineError => ({
    code,
    message: `Line ${line}: ${message}`,
    param,
    line,
  });
  const customId = request.custom_id;
  if (customId === undefined) return { error: err('missing_custom_id', 'custom_id', 'custom_id is missing.'), customId: undefined };
  if (typeof customId !== 'string' || customId === '') {
    return {
      error: err('invalid_custom_id', 'custom_id', `custom_id must be a non-empty string, got ${show(customId)}.`),
      customId: undefined,
    };
  }
  const fail = (e: BatchLineError) => ({ error: e, customId });

  const method = request.method;
  if (method === undefined) return fail(err('invalid_method', 'method', 'method is missing; it must be "POST".'));
  if (method !== 'POST') return fail(err('invalid_method', 'method', `method must be "POST", got ${show(method)}.`));

  const url = request.url;
  if (url === undefined) return fail(err('missing_url', 'url', `url is missing; it must be "${endpoint}".`));
  if (typeof url !== 'string' || normalizeEndpoint(url) !== endpoint) {
    return fail(err('url_mismatch', 'url', `url ${show(url)} does not match the batch endpoint "${endpoint}".`));
  }

  const body = request.body;
  if (body === undefined) return fail(err('missing_body', 'body', 'body is missing.'));
  if (!isPlainObject(body)) return fail(err('missing_body', 'body', `body must be a JSON object, got ${describeKind(body)}.`));

  const model = body.model;
  if (model === undefined) return fail(err('missing_model', 'body.model', 'body.model is missing.'));
  if (typeof model !== 'string' || model === '') {
    return fail(err('missing_model', 'body.model', `body.model must be a non-empty string, got ${show(model)}.`));
  }
  if (body.stream === true) {
    return fail(err('stream_not_supported', 'body.stream', 'body.stream is true; streaming is not supported in a batch.'));
  }
  return { error: undefined, customId, model };
}

/**
 * What JSON.parse accepts but a request cannot carry: nesting deeper than MAX_JSON_DEPTH (the
 * worker could not serialize it again), and numbers that do not survive the trip through a
 * double (they would reach the upstream changed: 1e999 as null, 2^64 rounded).
 */
function checkLimits(value: Record<string, unknown>): { code: ValidationCode; message: string } | undefined {
  const pending: unknown[] = [value];
  const depths: number[] = [1];
  while (pending.length > 0) {
    const item = pending.pop();
    const depth = depths.pop()!;
    if (typeof item === 'number') {
      if (!Number.isFinite(item) || (Number.isInteger(item) && !Number.isSafeInteger(item))) {
        return {
          code: 'number_out_of_range',
          message: `the number ${show(item === Infinity ? '1e999' : item === -Infinity ? '-1e999' : item).replace(/"/g, '')} cannot be sent exactly; numbers must be finite, and whole numbers within ±${Number.MAX_SAFE_INTEGER} (send larger ones as strings).`,
        };
      }
      continue;
    }
    if (typeof item !== 'object' || item === null) continue;
    if (depth > MAX_JSON_DEPTH) {
      return { code: 'json_too_deep', message: `the JSON nests objects and arrays deeper than ${MAX_JSON_DEPTH} levels.` };
    }
    const children = Array.isArray(item) ? item : Object.values(item);
    for (const child of children) {
      if (typeof child === 'object' && child !== null) {
        pending.push(child);
        depths.push(depth + 1);
      } else if (typeof child === 'number') {
        pending.push(child);
        depths.push(depth);
      }
    }
  }
  return undefined;
}

/**
 * The slow path for one non-blank line: decode, JSON.parse, check. Returns the line's first
 * problem (if any), its custom_id when it has a usable one (for the duplicate check, even on a
 * line with other problems), and its model when the line is otherwise a valid request.
 */
export function inspectSlowly(
  n: number,
  bytes: Uint8Array,
  endpoint: string,
): { error: BatchLineError | undefined; customId: string | undefined; model: string | undefined } {
  const decoded = decodeObject(bytes);
  if (!decoded.ok) {
    const message =
      decoded.reason === 'utf8'
        ? 'the line is not valid UTF-8.'
        : decoded.reason === 'json'
          ? 'the line is not parseable as valid JSON.'
          : `the line must be a JSON object, got ${decoded.kind ?? 'something else'}.`;
    return {
      error: { code: 'invalid_json_line', message: `Line ${n}: ${message}`, param: null, line: n },
      customId: undefined,
      model: undefined,
    };
  }
  const limit = checkLimits(decoded.value);
  if (limit)
    return {
      error: { code: limit.code, message: `Line ${n}: ${limit.message}`, param: null, line: n },
      customId: undefined,
      model: undefined,
    };
  const checked = checkRequest(n, decoded.value, endpoint);
  if (checked.error) return { error: checked.error, customId: checked.customId, model: undefined };
  return { error: undefined, customId: checked.customId, model: checked.model };
}

/** True for buf[from, to) empty or only spaces, tabs and carriage returns. */
function isBlankRange(buf: Uint8Array, from: number, to: number): boolean {
  if (from >= to) return true;
  if (buf[from] === OPEN_BRACE) return false;
  for (let i = from; i < to; i++) {
    const b = buf[i];
    if (b !== SPACE && b !== TAB && b !== CR) return false;
  }
  return true;
}

function rangeEqualsBytes(buf: Uint8Array, from: number, to: number, bytes: Uint8Array): boolean {
  if (to - from !== bytes.length) return false;
  for (let i = 0; i < bytes.length; i++) if (buf[from + i] !== bytes[i]) return false;
  return true;
}

/** Lines suspected of a duplicate custom_id, with the hash that made them suspect, in line order. */
class SuspectList {
  private items = new Uint32Array(3 * 64);
  length = 0;
  push(line: number, h1: number, h2: number): void {
    if (this.length * 3 === this.items.length) {
      const bigger = new Uint32Array(this.items.length * 2);
      bigger.set(this.items);
      this.items = bigger;
    }
    this.items[this.length * 3] = line;
    this.items[this.length * 3 + 1] = h1;
    this.items[this.length * 3 + 2] = h2;
    this.length++;
  }
  line(index: number): number {
    return this.items[index * 3]!;
  }
  h1(index: number): number {
    return this.items[index * 3 + 1]!;
  }
  h2(index: number): number {
    return this.items[index * 3 + 2]!;
  }
}

/** How many suspected duplicates one re-read confirms (it holds their custom_ids in a Map). */
const SUSPECTS_PER_REREAD = 20_000;

/**
 * The default cap on chunks per batch (see ValidationOptions.maxChunks): 1,000,000 requests at
 * 1,000 a chunk. The batch item then holds at most ~20 KB of chunk bookkeeping (doneChunks,
 * chunkAttempts: ~20 bytes a chunk), a twentieth of DynamoDB's 400 KB; and since every recorded
 * chunk rewrites that item, a batch's write units grow with the square of its chunks: fewer is
 * cheaper. Locally the embedded DynamoDB's compactions grow the same way: at 2,000 chunks a 2 GB
 * batch peaked ~25 MB higher (`npm run bench -- --scenario big-rss`).
 */
export const DEFAULT_MAX_CHUNKS = 1_000;

/**
 * Validates a batch input file in one streaming pass and, when it is valid, plans its chunks.
 * Each bad line gets one error (its first problem); `total` counts request (non-blank) lines.
 *
 * Memory does not grow with the file, only with its number of requests, by 8-16 bytes each:
 * custom_ids are kept as seeded 64-bit hashes in a HashSet64. A repeated hash makes a line a
 * suspected duplicate; after the pass, suspects are confirmed exactly by re-reading the file
 * (`options.reread`) and comparing the real custom_ids, so a hash collision never reports a
 * false duplicate.
 */
export async function validateBatchInput(source: AsyncIterable<Uint8Array>, options: ValidationOptions): Promise<ValidationResult> {
  const endpoint = normalizeEndpoint(options.endpoint);
  const { maxRequests, maxErrors, chunkMaxRequests, chunkMaxBytes } = options;
  const expect: FastLineExpectations = {
    urls: [Buffer.from(endpoint), ...(endpoint.startsWith('/v1/') ? [Buffer.from(`/v4/${endpoint.slice(4)}`)] : [])],
  };
  const seed = options.hashSeed ?? randomBytes(4).readUInt32LE(0);
  const hash = options.weakHashForTests
    ? (buf: Uint8Array, from: number, to: number) => {
        hashBytes(buf, from, to, seed);
        hashOut.h1 &= 0x3;
        hashOut.h2 = 0;
      }
    : (buf: Uint8Array, from: number, to: number) => hashBytes(buf, from, to, seed);

  // The chunk plan; dropped once the file is known to be invalid.
  const chunks: ChunkPlanEntry[] = [];
  let current: ChunkPlanEntry | undefined;
  const errors: BatchLineError[] = [];
  let errorCount = 0;
  const report = (error: BatchLineError): void => {
    if (errorCount === 0) chunks.length = 0; // no plan for an invalid file
    errorCount++;
    if (errors.length < maxErrors) errors.push(error);
  };
  const tooMany = (n: number): void => {
    report({
      code: 'too_many_tasks',
      message: `Line ${n}: the file has more than ${maxRequests} requests, the most a batch takes.`,
      param: null,
      line: n,
    });
  };

  const ids = new HashSet64();
  const suspects = new SuspectList();
  let model: string | undefined;
  let modelBytes: Buffer | undefined;
  let modelLine = 0;
  let total = 0;
  const fast: FastLine = { idFrom: 0, idTo: 0, modelFrom: 0, modelTo: 0 };

  const noteId = (n: number): void => {
    // Only the first maxRequests requests are remembered: the table stays bounded by the limit.
    const seen = total <= maxRequests ? ids.add(hashOut.h1, hashOut.h2) : ids.has(hashOut.h1, hashOut.h2);
    if (seen) suspects.push(n, hashOut.h1, hashOut.h2);
  };
  const plan = (start: number, end: number): void => {
    if (errorCount > 0) return; // no plan for an invalid file
    if (current !== undefined && current.requests < chunkMaxRequests && end - current.start <= chunkMaxBytes) {
      current.end = end;
      current.requests++;
    } else {
      current = { index: chunks.length, start, end, requests: 1 };
      chunks.push(current);
    }
  };
  const mismatch = (n: number, other: string): void => {
    report({
      code: 'model_mismatch',
      message: `Line ${n}: model ${show(other)} differs from ${show(model)} on line ${modelLine}; a batch uses one model.`,
      param: 'body.model',
      line: n,
    });
  };

  const onLine: RawLineHandler = (buf, from, to, n, start, end, tooLong) => {
    if (tooLong) {
      total++;
      if (total === maxRequests + 1) tooMany(n);
      report({
        code: 'line_too_large',
        message: `Line ${n}: the line is longer than the limit of ${options.maxLineBytes} bytes.`,
        param: null,
        line: n,
      });
      return;
    }
    if (isBlankRange(buf, from, to)) return;
    total++;
    if (total === maxRequests + 1) tooMany(n);

    if (scanRequestLine(buf, from, to, expect, fast)) {
      hash(buf, fast.idFrom, fast.idTo);
      noteId(n);
      if (modelBytes === undefined) {
        model = buf.toString('utf8', fast.modelFrom, fast.modelTo);
        modelBytes = Buffer.from(model);
        modelLine = n;
      } else if (!rangeEqualsBytes(buf, fast.modelFrom, fast.modelTo, modelBytes)) {
        mismatch(n, buf.toString('utf8', fast.modelFrom, fast.modelTo));
        return;
      }
      plan(start, end);
      return;
    }

    const inspected = inspectSlowly(n, buf.subarray(from, to), endpoint);
    if (inspected.customId !== undefined) {
      const idBytes = Buffer.from(inspected.customId);
      hash(idBytes, 0, idBytes.length);
      noteId(n);
    }
    if (inspected.error) {
      report(inspected.error);
      return;
    }
    const lineModel = inspected.model!;
    if (model === undefined) {
      model = lineModel;
      // A model with a lone surrogate (from an escape) has no UTF-8 form: no fast-path line matches it.
      modelBytes = Buffer.from(lineModel);
      if (modelBytes.toString('utf8') !== lineModel) modelBytes = Buffer.alloc(0);
      modelLine = n;
    } else if (lineModel !== model) {
      mismatch(n, lineModel);
      return;
    }
    plan(start, end);
  };

  const splitter = new JsonlLineSplitter({ maxLineBytes: options.maxLineBytes });
  for await (const chunk of source) splitter.pushRaw(chunk, onLine);
  splitter.endRaw(onLine);

  if (total === 0) {
    report({ code: 'empty_file', message: 'The input file has no requests.', param: null, line: null });
  }

  let finalErrors = errors;
  if (suspects.length > 0) {
    if (!options.reread) throw new Error('validateBatchInput: confirming suspected duplicate custom_ids needs options.reread');
    const duplicates = await confirmDuplicates(options, endpoint, expect, hash, suspects, maxErrors);
    if (duplicates.length > 0) {
      // A duplicate is the line's first problem: it replaces whatever else the pass found there.
      const duplicateLines = new Set(duplicates.map((d) => d.line));
      const others = errors.filter((e) => e.code === 'too_many_tasks' || e.line === null || !duplicateLines.has(e.line));
      finalErrors = [...others, ...duplicates]
        .map((error, order) => ({ error, order }))
        .sort((a, b) => (a.error.line ?? Infinity) - (b.error.line ?? Infinity) || a.order - b.order)
        .slice(0, maxErrors)
        .map(({ error }) => error);
      errorCount += duplicates.length;
    }
  }

  if (errorCount > 0 || model === undefined) return { ok: false, errors: finalErrors, total };
  return { ok: true, model, total, chunks: capChunks(chunks, options.maxChunks ?? DEFAULT_MAX_CHUNKS) };
}

/**
 * Re-reads the file to turn suspected duplicates (lines whose custom_id hash was seen before)
 * into exact answers, in line order, a bounded number of suspects per re-read. Stops once
 * `maxErrors` duplicates are confirmed: later ones could not be reported anyway.
 */
async function confirmDuplicates(
  options: ValidationOptions,
  endpoint: string,
  expect: FastLineExpectations,
  hash: (buf: Uint8Array, from: number, to: number) => void,
  suspects: SuspectList,
  maxErrors: number,
): Promise<BatchLineError[]> {
  const confirmed: BatchLineError[] = [];
  const fast: FastLine = { idFrom: 0, idTo: 0, modelFrom: 0, modelTo: 0 };
  for (let first = 0; first < suspects.length && confirmed.length < maxErrors; first += SUSPECTS_PER_REREAD) {
    const last = Math.min(suspects.length, first + SUSPECTS_PER_REREAD);
    const lastLine = suspects.line(last - 1);
    const roundSuspects = new Set<number>();
    const hashes = new HashSet64();
    for (let k = first; k < last; k++) {
      roundSuspects.add(suspects.line(k));
      hashes.add(suspects.h1(k), suspects.h2(k));
    }

    // Every line up to the round's last suspect whose custom_id has one of the suspects' hashes,
    // in order, with its real custom_id: the first use of each is remembered, the rest are duplicates.
    const firstLineOf = new Map<string, number>();
    let total = 0;
    let done = false;
    const onLine: RawLineHandler = (buf, from, to, n, _start, _end, tooLong) => {
      if (n > lastLine) {
        done = true;
        return;
      }
      if (tooLong) {
        total++;
        return;
      }
      if (isBlankRange(buf, from, to)) return;
      total++;
      let id: string | undefined;
      if (scanRequestLine(buf, from, to, expect, fast)) {
        hash(buf, fast.idFrom, fast.idTo);
        if (!hashes.has(hashOut.h1, hashOut.h2)) return;
        id = buf.toString('utf8', fast.idFrom, fast.idTo);
      } else {
        id = inspectSlowly(n, buf.subarray(from, to), endpoint).customId;
        if (id === undefined) return;
        const idBytes = Buffer.from(id);
        hash(idBytes, 0, idBytes.length);
        if (!hashes.has(hashOut.h1, hashOut.h2)) return;
      }
      const earlier = firstLineOf.get(id);
      if (earlier !== undefined) {
        if (roundSuspects.has(n) && confirmed.length < maxErrors) {
          confirmed.push({
            code: 'duplicate_custom_id',
            message: `Line ${n}: custom_id ${show(id)} is also used on line ${earlier}.`,
            param: 'custom_id',
            line: n,
          });
        }
      } else if (total <= options.maxRequests) {
        firstLineOf.set(id, n);
      }
    };
    const splitter = new JsonlLineSplitter({ maxLineBytes: options.maxLineBytes });
    for await (const chunk of await options.reread!()) {
      splitter.pushRaw(chunk, onLine);
      if (done) break;
    }
    if (!done) splitter.endRaw(onLine);
  }
  return confirmed;
}

/**
 * At most `maxChunks` chunks: a longer plan has runs of consecutive chunks merged. The batch
 * record keeps one entry per chunk (doneChunks, chunkAttempts), and a DynamoDB item holds 400 KB.
 */
function capChunks(chunks: ChunkPlanEntry[], maxChunks: number): ChunkPlanEntry[] {
  if (chunks.length <= maxChunks) return chunks;
  const per = Math.ceil(chunks.length / maxChunks);
  const merged: ChunkPlanEntry[] = [];
  for (let i = 0; i < chunks.length; i += per) {
    const group = chunks.slice(i, i + per);
    merged.push({
      index: merged.length,
      start: group[0]!.start,
      end: group.at(-1)!.end,
      requests: group.reduce((sum, chunk) => sum + chunk.requests, 0),
    });
  }
  return merged;
}
