// The DashScope seed's two utility scripts, done by a CSV library (quotes, commas, newlines and
// unicode survive) and streaming both ways, for chat, completions, embeddings and responses:
//   csv2jsonl: rows `custom_id,content` → one request line per row;
//   jsonl2csv: result lines → `custom_id,status_code,content,usage,error_code,error_message`.
import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CsvError, parse } from 'csv-parse';
import { stringify } from 'csv-stringify';
import { UsageError } from './exit.js';

/** The request body shapes csv2jsonl builds, by endpoint path without its /v1 or /v4 prefix. */
const BODY_OF: Record<string, (model: string, content: string) => object> = {
  '/chat/completions': (model, content) => ({ model, messages: [{ role: 'user', content }] }),
  '/completions': (model, content) => ({ model, prompt: content }),
  '/embeddings': (model, content) => ({ model, input: content }),
  '/responses': (model, content) => ({ model, input: content }),
};

export const ENDPOINT_ALIASES: Record<string, string> = {
  chat: '/v1/chat/completions',
  completions: '/v1/completions',
  embeddings: '/v1/embeddings',
  responses: '/v1/responses',
};

export const RESULT_COLUMNS = ['custom_id', 'status_code', 'content', 'usage', 'error_code', 'error_message'];

export interface Csv2JsonlOptions {
  model: string;
  /** A path such as /v1/embeddings, or an alias: chat, completions, embeddings, responses. */
  endpoint: string;
}

function requestBuilder(endpoint: string) {
  const url = ENDPOINT_ALIASES[endpoint] ?? endpoint;
  const build = BODY_OF[url.replace(/^\/v[14](?=\/)/, '')];
  if (!build) {
    throw new UsageError(`csv2jsonl builds requests for ${Object.keys(ENDPOINT_ALIASES).join(', ')} (or their /v1 paths), not ${endpoint}`);
  }
  return { url, build };
}

const sourceOf = (input: string): Readable => (input === '-' ? process.stdin : createReadStream(input));

/**
 * Runs a conversion into OUT (written under a temporary name and renamed when whole) or, without
 * OUT, into stdout (left open). The conversion is one pipeline, so an error anywhere stops it all.
 */
async function writeTo(output: string | undefined, convert: (destination: NodeJS.WritableStream, end: boolean) => Promise<void>) {
  if (output === undefined) return convert(process.stdout, false);
  const partial = `${output}.partial`;
  try {
    await convert(createWriteStream(partial), true);
    await rename(partial, output);
  } catch (error) {
    await rm(partial, { force: true });
    throw error;
  }
}

export async function csvToJsonl(input: string, output: string | undefined, options: Csv2JsonlOptions): Promise<void> {
  const { url, build } = requestBuilder(options.endpoint);
  const parser = parse({ bom: true, relax_column_count: true, skip_empty_lines: true });
  async function* requests(rows: AsyncIterable<string[]>): AsyncIterable<string> {
    let row = 0;
    for await (const cells of rows) {
      row += 1;
      // A first row naming the columns is a header, not a request.
      if (row === 1 && cells[0]?.trim() === 'custom_id') continue;
      const [customId, content] = cells;
      if (cells.length < 2 || customId === undefined || content === undefined) {
        throw new UsageError(`${input} row ${row}: expected two columns, custom_id and content`);
      }
      if (!customId) throw new UsageError(`${input} row ${row}: custom_id is empty`);
      yield `${JSON.stringify({ custom_id: customId, method: 'POST', url, body: build(options.model, content) })}\n`;
    }
  }
  try {
    await writeTo(output, (destination, end) => pipeline(sourceOf(input), parser, requests, destination, { end }));
  } catch (error) {
    if (error instanceof CsvError) throw new UsageError(`${input}: ${error.message}`);
    throw error;
  }
}

interface ResultLine {
  custom_id?: unknown;
  response?: { status_code?: unknown; body?: unknown } | null;
  error?: { code?: unknown; message?: unknown } | null;
}

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null;
const json = (value: unknown) => (value === undefined || value === null ? '' : JSON.stringify(value));

/** The answer's text: a chat message, a completion's text, a response's output text, or embeddings as JSON. */
export function contentOf(body: unknown): string {
  if (!isObject(body)) return typeof body === 'string' ? body : '';
  const choice = Array.isArray(body.choices) && isObject(body.choices[0]) ? body.choices[0] : undefined;
  if (choice) {
    if (isObject(choice.message)) {
      const message = choice.message;
      if (typeof message.content === 'string') return message.content;
      if (typeof message.refusal === 'string') return message.refusal;
      return json(message.tool_calls);
    }
    if (typeof choice.text === 'string') return choice.text;
  }
  if (body.object === 'list' && Array.isArray(body.data)) {
    const vectors = body.data.map((item) => (isObject(item) ? item.embedding : undefined));
    return json(vectors.length === 1 ? vectors[0] : vectors);
  }
  if (body.object === 'response' && Array.isArray(body.output)) {
    // What the SDK's `output_text` is: every output_text part of every message, joined.
    return body.output
      .flatMap((item) => (isObject(item) && item.type === 'message' && Array.isArray(item.content) ? item.content : []))
      .filter((part) => isObject(part) && part.type === 'output_text' && typeof part.text === 'string')
      .map((part) => (part as { text: string }).text)
      .join('');
  }
  if (isObject(body.error)) return '';
  return json(body);
}

export function resultRow(line: ResultLine): string[] {
  const body = line.response?.body;
  const upstreamError = isObject(body) && isObject(body.error) ? body.error : undefined;
  const error = line.error ?? upstreamError;
  const text = (value: unknown) => (value === undefined || value === null ? '' : String(value));
  return [
    text(line.custom_id),
    text(line.response?.status_code),
    contentOf(body),
    isObject(body) ? json(body.usage) : '',
    text(error?.code),
    text(error?.message),
  ];
}

export interface Jsonl2CsvOptions {
  /** Start with a UTF-8 byte order mark, so spreadsheet programs read the unicode right. */
  bom?: boolean;
}

export async function jsonlToCsv(input: string, output: string | undefined, options: Jsonl2CsvOptions = {}): Promise<void> {
  async function* rows(source: Readable) {
    yield RESULT_COLUMNS;
    let number = 0;
    for await (const raw of createInterface({ input: source, crlfDelay: Infinity })) {
      number += 1;
      const line = (number === 1 ? raw.replace(/^\uFEFF/, '') : raw).trim();
      if (!line) continue;
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        throw new UsageError(`${input} line ${number} is not JSON`);
      }
      if (!isObject(parsed) || Array.isArray(parsed)) throw new UsageError(`${input} line ${number} is not a JSON object`);
      yield resultRow(parsed as ResultLine);
    }
  }
  await writeTo(output, (destination, end) =>
    pipeline(Readable.from(rows(sourceOf(input))), stringify({ bom: options.bom ?? false }), destination, { end }),
  );
}
