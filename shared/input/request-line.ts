// One request line of a batch input file: the model every reader of a line goes through. It says
// what a blank line is, how a line's bytes become an object (UTF-8, JSON.parse, an object), which
// urls a line may carry for the batch's endpoint (/v4 is the /v1 alias), what a well-formed
// request is, and the code and message of every way a line can fail to be one.
//
// Its readers: validation's slow path (inspectRequestLine, which words every error), the upload
// check of a file's first request (decodeLine), and the worker's chunk reader (parseRequestLine).
// The fast scanner (fast-line.ts) is validation's allocation-free path for the common line; it
// shares the definitions here (whitespace, accepted urls, MAX_JSON_DEPTH, rangeEquals) and answers
// only "certainly a good request" or "not sure", so it never decides otherwise than this module.
import type { BatchLineError } from '../batch/model.js';

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
  'too_many_errors',
] as const;
export type ValidationCode = (typeof VALIDATION_CODES)[number];

/** A parsed request line of a batch input file. */
export interface BatchRequestLine {
  custom_id: string;
  method: string;
  url: string;
  body: Record<string, unknown>;
}

/** The deepest nesting of objects and arrays a request line may have (the top-level object is 1). */
export const MAX_JSON_DEPTH = 256;

// ---------------------------------------------------------------------------------------------
// Bytes: blank lines, and ranges.

const SPACE = 0x20;
const TAB = 0x09;
const CR = 0x0d;
const LF = 0x0a;
const OPEN_BRACE = 0x7b;

/** The bytes a blank line may hold: space, tab and CR (a line's `\n` is not part of it). */
export function isBlankByte(byte: number): boolean {
  return byte === SPACE || byte === TAB || byte === CR;
}

/** JSON's whitespace: the blank bytes and `\n`. */
export function isJsonSpace(byte: number): boolean {
  return byte === SPACE || byte === TAB || byte === CR || byte === LF;
}

/** True for buf[from, to) empty or only blank bytes: such a line is skipped, and not counted. */
export function isBlankRange(buf: Uint8Array, from: number, to: number): boolean {
  if (from >= to) return true;
  if (buf[from] === OPEN_BRACE) return false; // the usual case, decided at once
  for (let i = from; i < to; i++) if (!isBlankByte(buf[i]!)) return false;
  return true;
}

/** True for an empty line or one of only spaces, tabs and carriage returns: such lines are skipped. */
export function isBlankLine(bytes: Uint8Array): boolean {
  return isBlankRange(bytes, 0, bytes.length);
}

/** Whether buf[from, to) holds exactly the bytes of `word`. */
export function rangeEquals(buf: Uint8Array, from: number, to: number, word: Uint8Array): boolean {
  if (to - from !== word.length) return false;
  for (let i = 0; i < word.length; i++) if (buf[from + i] !== word[i]) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Endpoints.

/** Maps Zhipu-style "/v4/x" paths to their OpenAI "/v1/x" equivalent; other paths are unchanged. */
export function normalizeEndpoint(path: string): string {
  return path.startsWith('/v4/') ? `/v1/${path.slice(4)}` : path;
}

/**
 * The `url` values a line may carry in a batch for `endpoint`: exactly those whose normalized form
 * is the normalized endpoint (the endpoint itself and, for a /v1 path, its /v4 alias).
 */
export function acceptedUrls(endpoint: string): string[] {
  const normalized = normalizeEndpoint(endpoint);
  return normalized.startsWith('/v1/') ? [normalized, `/v4/${normalized.slice(4)}`] : [normalized];
}

// ---------------------------------------------------------------------------------------------
// Decoding: UTF-8, JSON.parse, an object.

const decoder = new TextDecoder('utf-8', { fatal: true });

/** Why a line's bytes are not a JSON object: not UTF-8, not JSON, or JSON of another kind. */
export type DecodeProblem = 'utf8' | 'json' | 'not_object';
export type DecodedLine = { ok: true; value: Record<string, unknown> } | { ok: false; problem: DecodeProblem; kind?: string };

/** A non-blank line's bytes as a JSON object (as JSON.parse reads it: the last of duplicate keys wins). */
export function decodeLine(bytes: Uint8Array): DecodedLine {
  let text: string;
  try {
    text = decoder.decode(bytes);
  } catch {
    return { ok: false, problem: 'utf8' };
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, problem: 'json' };
  }
  if (!isPlainObject(value)) return { ok: false, problem: 'not_object', kind: describeKind(value) };
  return { ok: true, value };
}

/** The longest model name a file record keeps from its first request (longer ones are not routed by name). */
const MAX_RECORDED_MODEL_CHARS = 256;

/** The model a request object's body names, when it is a string short enough to record. */
export function requestedModel(request: Record<string, unknown>): string | undefined {
  const body = request.body;
  const model = isPlainObject(body) ? body.model : undefined;
  return typeof model === 'string' && model !== '' && model.length <= MAX_RECORDED_MODEL_CHARS ? model : undefined;
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

// ---------------------------------------------------------------------------------------------
// Messages.

/**
 * How many UTF-8 bytes a value quoted in a message may take. A batch record stores its errors, and
 * DynamoDB counts bytes: a quote cut at 80 UTF-16 characters could be 240 bytes of CJK. 80 bytes
 * keep ASCII quotes as they were (77 characters and "...").
 */
export const QUOTE_BYTES = 80;

/**
 * `text` cut to at most `maxBytes` bytes of UTF-8 ("..." included), by whole code points: a
 * surrogate pair is never split. Text that fits is returned as it is.
 */
export function cutToBytes(text: string, maxBytes: number): string {
  if (text.length * 3 <= maxBytes || Buffer.byteLength(text) <= maxBytes) return text; // a UTF-16 unit is at most 3 bytes
  const budget = maxBytes - 3;
  let bytes = 0;
  let end = 0;
  for (const char of text) {
    const point = char.codePointAt(0)!;
    const size = point < 0x80 ? 1 : point < 0x800 ? 2 : point < 0x10000 ? 3 : 4;
    if (bytes + size > budget) break;
    bytes += size;
    end += char.length;
  }
  return `${text.slice(0, end)}...`;
}

/** A value quoted for a message (as JSON), cut to QUOTE_BYTES so that errors stay small. */
export function quote(value: unknown): string {
  if (value === undefined) return 'undefined';
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return cutToBytes(text, QUOTE_BYTES);
}

/** An error of line `n`; its message starts "Line n: ". */
export function lineError(n: number, code: ValidationCode, param: string | null, message: string): BatchLineError {
  return { code, message: `Line ${n}: ${message}`, param, line: n };
}

/** The errors validation finds across lines (or in the file as a whole), worded. */
export const fileErrors = {
  tooManyTasks: (n: number, maxRequests: number): BatchLineError =>
    lineError(n, 'too_many_tasks', null, `the file has more than ${maxRequests} requests, the most a batch takes.`),
  lineTooLarge: (n: number, maxLineBytes: number): BatchLineError =>
    lineError(n, 'line_too_large', null, `the line is longer than the limit of ${maxLineBytes} bytes.`),
  modelMismatch: (n: number, model: string, firstModel: string, firstLine: number): BatchLineError =>
    lineError(
      n,
      'model_mismatch',
      'body.model',
      `model ${quote(model)} differs from ${quote(firstModel)} on line ${firstLine}; a batch uses one model.`,
    ),
  duplicateCustomId: (n: number, customId: string, firstLine: number): BatchLineError =>
    lineError(n, 'duplicate_custom_id', 'custom_id', `custom_id ${quote(customId)} is also used on line ${firstLine}.`),
  emptyFile: (): BatchLineError => ({ code: 'empty_file', message: 'The input file has no requests.', param: null, line: null }),
};

const DECODE_MESSAGES: Record<DecodeProblem, (kind: string | undefined) => string> = {
  utf8: () => 'the line is not valid UTF-8.',
  json: () => 'the line is not parseable as valid JSON.',
  not_object: (kind) => `the line must be a JSON object, got ${kind ?? 'something else'}.`,
};

// ---------------------------------------------------------------------------------------------
// The request.

/** Checks one request object; returns the error for it, or the parts validation keeps. */
function checkRequest(
  n: number,
  request: Record<string, unknown>,
  endpoint: string,
): { error: BatchLineError; customId: string | undefined } | { error: undefined; customId: string; model: string } {
  const customId = request.custom_id;
  if (customId === undefined)
    return { error: lineError(n, 'missing_custom_id', 'custom_id', 'custom_id is missing.'), customId: undefined };
  if (typeof customId !== 'string' || customId === '') {
    return {
      error: lineError(n, 'invalid_custom_id', 'custom_id', `custom_id must be a non-empty string, got ${quote(customId)}.`),
      customId: undefined,
    };
  }
  const fail = (error: BatchLineError) => ({ error, customId });

  const method = request.method;
  if (method === undefined) return fail(lineError(n, 'invalid_method', 'method', 'method is missing; it must be "POST".'));
  if (method !== 'POST') return fail(lineError(n, 'invalid_method', 'method', `method must be "POST", got ${quote(method)}.`));

  const url = request.url;
  if (url === undefined) return fail(lineError(n, 'missing_url', 'url', `url is missing; it must be "${endpoint}".`));
  if (typeof url !== 'string' || normalizeEndpoint(url) !== endpoint) {
    return fail(lineError(n, 'url_mismatch', 'url', `url ${quote(url)} does not match the batch endpoint "${endpoint}".`));
  }

  const body = request.body;
  if (body === undefined) return fail(lineError(n, 'missing_body', 'body', 'body is missing.'));
  if (!isPlainObject(body)) return fail(lineError(n, 'missing_body', 'body', `body must be a JSON object, got ${describeKind(body)}.`));

  const model = body.model;
  if (model === undefined) return fail(lineError(n, 'missing_model', 'body.model', 'body.model is missing.'));
  if (typeof model !== 'string' || model === '') {
    return fail(lineError(n, 'missing_model', 'body.model', `body.model must be a non-empty string, got ${quote(model)}.`));
  }
  if (body.stream === true) {
    return fail(lineError(n, 'stream_not_supported', 'body.stream', 'body.stream is true; streaming is not supported in a batch.'));
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
          message: `the number ${quote(item === Infinity ? '1e999' : item === -Infinity ? '-1e999' : item).replace(/"/g, '')} cannot be sent exactly; numbers must be finite, and whole numbers within ±${Number.MAX_SAFE_INTEGER} (send larger ones as strings).`,
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

/** What validation learns of one line: its first problem, its custom_id and its model. */
export interface InspectedLine {
  error: BatchLineError | undefined;
  /** Set when the line has a usable custom_id (for the duplicate check, even on a line with other problems). */
  customId: string | undefined;
  /** Set when the line is otherwise a valid request. */
  model: string | undefined;
}

/**
 * Validation's slow path for non-blank line `n` of a batch for `endpoint` (normalized): decode,
 * JSON.parse, check, and word the line's first problem.
 */
export function inspectRequestLine(n: number, bytes: Uint8Array, endpoint: string): InspectedLine {
  const decoded = decodeLine(bytes);
  if (!decoded.ok) {
    const message = DECODE_MESSAGES[decoded.problem](decoded.kind);
    return { error: lineError(n, 'invalid_json_line', null, message), customId: undefined, model: undefined };
  }
  const limit = checkLimits(decoded.value);
  if (limit) return { error: lineError(n, limit.code, null, limit.message), customId: undefined, model: undefined };
  const checked = checkRequest(n, decoded.value, endpoint);
  if (checked.error) return { error: checked.error, customId: checked.customId, model: undefined };
  return { error: undefined, customId: checked.customId, model: checked.model };
}

const PARSE_REASONS: Record<DecodeProblem, string> = { utf8: 'not valid UTF-8', json: 'not valid JSON', not_object: 'not a JSON object' };

/**
 * Parses one non-blank line of an input file that has passed validation (the worker reads its
 * chunk by byte range and needs custom_id, url and body of each request). Checks shapes only.
 */
export function parseRequestLine(bytes: Uint8Array): { ok: true; request: BatchRequestLine } | { ok: false; reason: string } {
  const decoded = decodeLine(bytes);
  if (!decoded.ok) return { ok: false, reason: PARSE_REASONS[decoded.problem] };
  const { custom_id, method, url, body } = decoded.value;
  if (typeof custom_id !== 'string' || custom_id === '') return { ok: false, reason: 'custom_id is not a non-empty string' };
  if (typeof url !== 'string') return { ok: false, reason: 'url is not a string' };
  if (!isPlainObject(body)) return { ok: false, reason: 'body is not an object' };
  return { ok: true, request: { custom_id, method: typeof method === 'string' ? method : 'POST', url, body } };
}
