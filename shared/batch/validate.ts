// Validation of a batch input file in one streaming pass, and the chunk plan of a valid file.
// Every bad line is reported with its line number (up to maxErrors entries); nothing is sent
// upstream for a file that fails. A valid file is cut into chunks by byte range, so that workers
// can read their share of the file without the rest.
import type { BatchLineError, ChunkPlanEntry } from './model.js';
import { JsonlLineSplitter, type JsonlLine } from './jsonl.js';

export interface ValidationOptions {
  /** The batch's endpoint, e.g. "/v1/chat/completions" (a "/v4/..." path is accepted as its /v1 equivalent). */
  endpoint: string;
  maxRequests: number;
  maxLineBytes: number;
  /** How many errors are kept; further bad lines are counted but not reported. */
  maxErrors: number;
  chunkMaxRequests: number;
  chunkMaxBytes: number;
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
export function parseRequestLine(
  bytes: Uint8Array,
): { ok: true; request: BatchRequestLine } | { ok: false; reason: string } {
  const decoded = decodeObject(bytes);
  if (!decoded.ok) {
    return { ok: false, reason: decoded.reason === 'utf8' ? 'not valid UTF-8' : decoded.reason === 'json' ? 'not valid JSON' : 'not a JSON object' };
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
    return { error: err('invalid_custom_id', 'custom_id', `custom_id must be a non-empty string, got ${show(customId)}.`), customId: undefined };
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
 * Validates a batch input file in one streaming pass and, when it is valid, plans its chunks.
 * Each bad line gets one error (its first problem); `total` counts request (non-blank) lines.
 */
export async function validateBatchInput(
  source: AsyncIterable<Uint8Array>,
  options: ValidationOptions,
): Promise<ValidationResult> {
  const endpoint = normalizeEndpoint(options.endpoint);
  const { maxRequests, maxErrors, chunkMaxRequests, chunkMaxBytes } = options;
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

  // custom_id → line of its first use. Memory grows with the number of distinct ids (acceptable for now).
  const firstLineOf = new Map<string, number>();
  let model: string | undefined;
  let modelLine = 0;
  let total = 0;

  const onLine = (line: JsonlLine): void => {
    const n = line.number;
    if (line.tooLong) {
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
    if (isBlankLine(line.bytes)) return;
    total++;
    if (total === maxRequests + 1) tooMany(n);

    const decoded = decodeObject(line.bytes);
    if (!decoded.ok) {
      const message =
        decoded.reason === 'utf8'
          ? 'the line is not valid UTF-8.'
          : decoded.reason === 'json'
            ? 'the line is not parseable as valid JSON.'
            : `the line must be a JSON object, got ${decoded.kind ?? 'something else'}.`;
      report({ code: 'invalid_json_line', message: `Line ${n}: ${message}`, param: null, line: n });
      return;
    }

    const checked = checkRequest(n, decoded.value, endpoint);
    const customId = checked.customId;
    if (customId !== undefined) {
      const first = firstLineOf.get(customId);
      if (first === undefined) {
        firstLineOf.set(customId, n);
      } else {
        report({
          code: 'duplicate_custom_id',
          message: `Line ${n}: custom_id ${show(customId)} is also used on line ${first}.`,
          param: 'custom_id',
          line: n,
        });
        return;
      }
    }
    if (checked.error !== undefined) {
      report(checked.error);
      return;
    }
    if (model === undefined) {
      model = checked.model;
      modelLine = n;
    } else if (checked.model !== model) {
      report({
        code: 'model_mismatch',
        message: `Line ${n}: model ${show(checked.model)} differs from ${show(model)} on line ${modelLine}; a batch uses one model.`,
        param: 'body.model',
        line: n,
      });
      return;
    }

    if (errorCount > 0) return; // no plan for an invalid file
    if (current !== undefined && current.requests < chunkMaxRequests && line.end - current.start <= chunkMaxBytes) {
      current.end = line.end;
      current.requests++;
    } else {
      current = { index: chunks.length, start: line.start, end: line.end, requests: 1 };
      chunks.push(current);
    }
  };

  const tooMany = (n: number): void => {
    report({
      code: 'too_many_tasks',
      message: `Line ${n}: the file has more than ${maxRequests} requests, the most a batch takes.`,
      param: null,
      line: n,
    });
  };

  const splitter = new JsonlLineSplitter({ maxLineBytes: options.maxLineBytes });
  for await (const chunk of source) splitter.push(chunk, onLine);
  splitter.end(onLine);

  if (total === 0) {
    report({ code: 'empty_file', message: 'The input file has no requests.', param: null, line: null });
  }
  if (errorCount > 0 || model === undefined) return { ok: false, errors, total };
  return { ok: true, model, total, chunks };
}
