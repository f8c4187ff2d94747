// The validator's fast path: one pass over the bytes of a request line that checks, without
// JSON.parse and without allocating, that the line is exactly what JSON.parse would accept as a
// well-formed request, and finds its custom_id and model. It only ever answers "certainly fine"
// (true) or "not sure" (false): on false the validator takes the slow path (TextDecoder +
// JSON.parse + the checks on the parsed object), which also writes every error message. So the
// fast path decides nothing the slow path would decide differently; test/unit/input/fast-line.test.ts
// checks that against JSON.parse on generated and mutated lines. What a good request is, and the
// definitions both paths use (JSON whitespace, accepted urls, MAX_JSON_DEPTH), live in request-line.ts.
//
// What makes it answer false (besides an actual problem): an escape (\n, \u00e9 ...) in a top-level
// key or in custom_id, method, url or model; a number with an exponent or more than 15 integer
// digits (the slow path checks that it survives a round trip through a double); nesting deeper
// than MAX_JSON_DEPTH.
//
// One module of some 400 lines: the scanner and its string and number scans share module state
// on the hottest path of validation (the word view of the buffer, stringEscaped, sawNonAscii).
import { isUtf8 } from 'node:buffer';
import { acceptedUrls, isJsonSpace, MAX_JSON_DEPTH, rangeEquals } from './request-line.js';

/** What the fast path found on a line it accepted: byte ranges of custom_id's and model's values. */
export interface FastLine {
  idFrom: number;
  idTo: number;
  modelFrom: number;
  modelTo: number;
}

export interface FastLineExpectations {
  /** The accepted values of `url`, as bytes (the batch's endpoint, and its /v4 alias). */
  urls: Uint8Array[];
}

/** What the fast path expects of the lines of a batch for `endpoint`. */
export function fastLineExpectations(endpoint: string): FastLineExpectations {
  return { urls: acceptedUrls(endpoint).map((url) => Buffer.from(url)) };
}

/** Byte classes inside a string: 0 plain ASCII, 1 quote, backslash or control byte, 2 non-ASCII. */
const STRING_CLASS = new Uint8Array(256);
for (let c = 0; c < 0x20; c++) STRING_CLASS[c] = 1;
STRING_CLASS[0x22] = 1;
STRING_CLASS[0x5c] = 1;
for (let c = 0x80; c < 0x100; c++) STRING_CLASS[c] = 2;

/** The characters allowed after a backslash, other than `u`. */
const SIMPLE_ESCAPE = new Uint8Array(256);
for (const c of '"\\/bfnrt') SIMPLE_ESCAPE[c.charCodeAt(0)] = 1;

const HEX = new Uint8Array(256);
for (const c of '0123456789abcdefABCDEF') HEX[c.charCodeAt(0)] = 1;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const MINUS = 0x2d;
const ZERO = 0x30;
const NINE = 0x39;
const DOT = 0x2e;

const OBJECT = 1;
const ARRAY = 2;

// Parser states.
const VALUE = 0;
const AFTER_VALUE = 1;
const KEY = 2;
const FIRST_KEY = 3;
const FIRST_ELEMENT = 4;

// The keys the validator looks at.
const OTHER = 0;
const CUSTOM_ID = 1;
const METHOD = 2;
const URL = 3;
const BODY = 4;
const MODEL = 5;
const STREAM = 6;
/** An escaped key where it matters: the slow path decides. */
const UNSURE = -1;

const bytesOf = (text: string) => Buffer.from(text, 'latin1');
const K_CUSTOM_ID = bytesOf('custom_id');
const K_METHOD = bytesOf('method');
const K_URL = bytesOf('url');
const K_BODY = bytesOf('body');
const K_MODEL = bytesOf('model');
const K_STREAM = bytesOf('stream');
const V_POST = bytesOf('POST');

/** The index of the first byte at or after i that is not JSON whitespace (or `to`). */
function skipSpace(buf: Uint8Array, i: number, to: number): number {
  while (i < to && isJsonSpace(buf[i]!)) i++;
  return i;
}

const stack = new Uint8Array(MAX_JSON_DEPTH + 1);

// Out-values of scanString (module state: the scanner is synchronous and not re-entrant).
let stringEscaped = false;
let sawNonAscii = false;

// Long strings are scanned four bytes at a time (SWAR) through an Int32Array view of the buffer
// the line lies in, made once per buffer: a word with none of `"`, `\\`, a control byte or a
// non-ASCII byte is skipped in a few integer operations.
let wordsOf: Uint8Array | undefined;
let words: Int32Array<ArrayBufferLike> = new Int32Array(0);
/** Index in the buffer of the first byte of words[0] (the first 4-aligned byte). */
let wordBase = 0;

function viewWords(buf: Uint8Array): void {
  if (buf === wordsOf) return;
  wordsOf = buf;
  wordBase = (4 - (buf.byteOffset & 3)) & 3;
  const count = buf.length > wordBase ? (buf.length - wordBase) >> 2 : 0;
  words = new Int32Array(buf.buffer, buf.byteOffset + wordBase, count);
}

/** Scans a string whose opening quote is at i - 1; returns the index after the closing quote, or -1. */
function scanString(buf: Uint8Array, i: number, to: number): number {
  let escaped = false;
  while (i < to) {
    const c = buf[i]!;
    const cls = STRING_CLASS[c];
    if (cls === 0) {
      i++;
      // At a word boundary with a long way to go: skip plain words.
      if (((i - wordBase) & 3) === 0 && to - i >= 16) {
        // A byte of w is special when w - 0x20 (or w ^ '"' - 1, or w ^ '\\' - 1) wraps, or w is
        // non-ASCII: the high bit of some byte of the OR is then set. A borrow can flag a byte
        // above a special one, never a word without one, and a flagged word is rescanned bytewise.
        let k = (i - wordBase) >> 2;
        const end = (to - wordBase) >> 2;
        while (k + 1 < end) {
          const w = words[k]!;
          const v = words[k + 1]!;
          if (
            (((w ^ 0x22222222) - 0x01010101) |
              ((w ^ 0x5c5c5c5c) - 0x01010101) |
              (w - 0x20202020) |
              w |
              ((v ^ 0x22222222) - 0x01010101) |
              ((v ^ 0x5c5c5c5c) - 0x01010101) |
              (v - 0x20202020) |
              v) &
            0x80808080
          ) {
            break;
          }
          k += 2;
        }
        i = wordBase + (k << 2);
      }
      continue;
    }
    if (c === QUOTE) {
      stringEscaped = escaped;
      return i + 1;
    }
    if (c === BACKSLASH) {
      escaped = true;
      if (i + 1 >= to) return -1;
      const e = buf[i + 1]!;
      if (e === 0x75) {
        if (i + 5 >= to || !HEX[buf[i + 2]!] || !HEX[buf[i + 3]!] || !HEX[buf[i + 4]!] || !HEX[buf[i + 5]!]) return -1;
        i += 6;
      } else if (SIMPLE_ESCAPE[e]) {
        i += 2;
      } else {
        return -1;
      }
      continue;
    }
    if (cls === 2) {
      sawNonAscii = true;
      i++;
      continue;
    }
    return -1; // a raw control character
  }
  return -1;
}

/**
 * Scans a number at i; returns the index after it, -1 when it is not a JSON number, or -2 when
 * it is one the slow path must look at (an exponent, or more than 15 integer digits).
 */
function scanNumber(buf: Uint8Array, i: number, to: number): number {
  if (buf[i] === MINUS) i++;
  if (i >= to) return -1;
  const intStart = i;
  const first = buf[i]!;
  if (first === ZERO) {
    i++;
  } else if (first > ZERO && first <= NINE) {
    i++;
    while (i < to && buf[i]! >= ZERO && buf[i]! <= NINE) i++;
  } else {
    return -1;
  }
  const intDigits = i - intStart;
  if (i < to && buf[i] === DOT) {
    i++;
    const fracStart = i;
    while (i < to && buf[i]! >= ZERO && buf[i]! <= NINE) i++;
    if (i === fracStart) return -1;
  }
  if (i < to && (buf[i] === 0x65 || buf[i] === 0x45)) return -2;
  return intDigits > 15 ? -2 : i;
}

function literalAt(buf: Uint8Array, i: number, to: number, word: Uint8Array): boolean {
  return i + word.length <= to && rangeEquals(buf, i, i + word.length, word);
}
const L_TRUE = bytesOf('true');
const L_FALSE = bytesOf('false');
const L_NULL = bytesOf('null');

/** Scans true, false, null or a number at i; returns the index after it, or a negative number when the fast path is not sure. */
function scanScalar(buf: Uint8Array, i: number, to: number): number {
  const c = buf[i]!;
  if (c === 0x74) return literalAt(buf, i, to, L_TRUE) ? i + 4 : -1;
  if (c === 0x66) return literalAt(buf, i, to, L_FALSE) ? i + 5 : -1;
  if (c === 0x6e) return literalAt(buf, i, to, L_NULL) ? i + 4 : -1;
  if (c === MINUS || (c >= ZERO && c <= NINE)) return scanNumber(buf, i, to);
  return -1;
}

// Where a key stands: the keys the validator looks at are at the top level and in the body.
const TOP = 0;
const IN_BODY = 1;
const ELSEWHERE = 2;

/**
 * Which key buf[from, to) is, just scanned (stringEscaped tells whether it had an escape), where
 * it stands: UNSURE for an escaped key where it might decode to one the validator looks at.
 */
function keyAt(buf: Uint8Array, from: number, to: number, where: number): number {
  if (where === ELSEWHERE) return OTHER;
  if (stringEscaped) return UNSURE;
  if (where === TOP) {
    if (rangeEquals(buf, from, to, K_CUSTOM_ID)) return CUSTOM_ID;
    if (rangeEquals(buf, from, to, K_METHOD)) return METHOD;
    if (rangeEquals(buf, from, to, K_URL)) return URL;
    if (rangeEquals(buf, from, to, K_BODY)) return BODY;
    return OTHER;
  }
  if (rangeEquals(buf, from, to, K_MODEL)) return MODEL;
  if (rangeEquals(buf, from, to, K_STREAM)) return STREAM;
  return OTHER;
}

/**
 * True when buf[from, to) is certainly a valid request line for a batch with these expectations:
 * valid UTF-8, JSON that JSON.parse accepts, an object whose (last) custom_id is a non-empty
 * string, method is "POST", url is one of `expect.urls`, body is an object whose model is a
 * non-empty string and whose stream is not true. `out` then holds the ranges of custom_id and
 * model (raw bytes, which are their UTF-8 encoding: they have no escapes).
 */
export function scanRequestLine(buf: Uint8Array, from: number, to: number, expect: FastLineExpectations, out: FastLine): boolean {
  // Leading whitespace, then the object.
  let i = skipSpace(buf, from, to);
  if (i >= to || buf[i] !== OPEN_OBJECT) return false;
  sawNonAscii = false;
  viewWords(buf);

  let depth = 1;
  stack[1] = OBJECT;
  i++;
  let state = FIRST_KEY;
  let key = OTHER;
  /** Depth of the body object while the scan is inside it, else 0. */
  let bodyDepth = 0;

  // The last occurrence of each key wins, as with JSON.parse.
  let idOk = false;
  let idFrom = 0;
  let idTo = 0;
  let methodOk = false;
  let urlOk = false;
  let bodyOk = false;
  let modelOk = false;
  let modelFrom = 0;
  let modelTo = 0;
  let streamTrue = false;

  for (;;) {
    i = skipSpace(buf, i, to);
    if (state === AFTER_VALUE) {
      if (i >= to) return false;
      const c = buf[i];
      if (c === COMMA) {
        i++;
        state = stack[depth] === OBJECT ? KEY : VALUE;
        continue;
      }
      if ((c === CLOSE_OBJECT && stack[depth] === OBJECT) || (c === CLOSE_ARRAY && stack[depth] === ARRAY)) {
        if (depth === bodyDepth) bodyDepth = 0;
        depth--;
        i++;
        if (depth === 0) break;
        continue;
      }
      return false;
    }
    if (i >= to) return false;
    if (state === FIRST_KEY) {
      if (buf[i] === CLOSE_OBJECT) {
        if (depth === bodyDepth) bodyDepth = 0;
        depth--;
        i++;
        state = AFTER_VALUE;
        if (depth === 0) break;
        continue;
      }
      state = KEY;
    } else if (state === FIRST_ELEMENT) {
      if (buf[i] === CLOSE_ARRAY) {
        depth--;
        i++;
        state = AFTER_VALUE;
        continue;
      }
      state = VALUE;
    }

    if (state === KEY) {
      if (buf[i] !== QUOTE) return false;
      const keyFrom = i + 1;
      const next = scanString(buf, keyFrom, to);
      if (next < 0) return false;
      key = keyAt(buf, keyFrom, next - 1, depth === 1 ? TOP : depth === bodyDepth ? IN_BODY : ELSEWHERE);
      if (key === UNSURE) return false;
      i = skipSpace(buf, next, to);
      if (i >= to || buf[i] !== COLON) return false;
      i++;
      state = VALUE;
      continue;
    }

    // state === VALUE
    const c = buf[i]!;
    const valueKey = key;
    key = OTHER;
    if (c === QUOTE) {
      const valueFrom = i + 1;
      const next = scanString(buf, valueFrom, to);
      if (next < 0) return false;
      const valueTo = next - 1;
      switch (valueKey) {
        case CUSTOM_ID:
          idOk = !stringEscaped && valueTo > valueFrom;
          idFrom = valueFrom;
          idTo = valueTo;
          break;
        case METHOD:
          methodOk = !stringEscaped && rangeEquals(buf, valueFrom, valueTo, V_POST);
          break;
        case URL:
          urlOk = false;
          if (!stringEscaped) for (const url of expect.urls) if (rangeEquals(buf, valueFrom, valueTo, url)) urlOk = true;
          break;
        case BODY:
          bodyOk = false;
          break;
        case MODEL:
          modelOk = !stringEscaped && valueTo > valueFrom;
          modelFrom = valueFrom;
          modelTo = valueTo;
          break;
        case STREAM:
          streamTrue = false;
          break;
      }
      i = next;
      state = AFTER_VALUE;
      continue;
    }
    // Any value but a string: custom_id, method, url and model are then wrong.
    if (valueKey === CUSTOM_ID) idOk = false;
    else if (valueKey === METHOD) methodOk = false;
    else if (valueKey === URL) urlOk = false;
    else if (valueKey === MODEL) modelOk = false;
    else if (valueKey === STREAM) streamTrue = c === 0x74; // true (checked below)
    if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
      if (depth >= MAX_JSON_DEPTH) return false;
      depth++;
      if (c === OPEN_OBJECT) {
        stack[depth] = OBJECT;
        state = FIRST_KEY;
        if (valueKey === BODY) {
          bodyOk = true;
          bodyDepth = depth;
          modelOk = false;
          streamTrue = false;
        }
      } else {
        stack[depth] = ARRAY;
        state = FIRST_ELEMENT;
        if (valueKey === BODY) bodyOk = false;
      }
      i++;
      continue;
    }
    if (valueKey === BODY) bodyOk = false;
    i = scanScalar(buf, i, to);
    if (i < 0) return false;
    state = AFTER_VALUE;
  }

  // After the top-level object: only whitespace.
  if (skipSpace(buf, i, to) < to) return false;
  if (!(idOk && methodOk && urlOk && bodyOk && modelOk) || streamTrue) return false;
  if (sawNonAscii && !isUtf8(buf.subarray(from, to))) return false;
  out.idFrom = idFrom;
  out.idTo = idTo;
  out.modelFrom = modelFrom;
  out.modelTo = modelTo;
  return true;
}
