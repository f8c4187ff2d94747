// Melious's results: ONE output file holding every row, "error set for failed rows and response set
// for successes, both keyed by your custom_id". The error file's rows join the output file's; a row
// the upstream refused (an error file row with `error: null` and the upstream's answer in
// `response`) gains an `error` naming the refusal, and keeps the upstream's status and body.
// Rows stream one at a time from the error parts to new parts: nothing holds a whole part.

import readline from 'node:readline';
import { Readable } from 'node:stream';
import type { BlobStore } from '../ports.js';
import { linesBody } from '../work/line-writer.js';

interface ResultRow {
  response: { status_code?: unknown; body?: unknown } | null;
  error: { code: string; message: string } | null;
}

/** The `error` a refused row gains: the upstream's own code and message where its body has them. */
export function refusalError(response: NonNullable<ResultRow['response']>): { code: string; message: string } {
  const status = typeof response.status_code === 'number' ? response.status_code : undefined;
  const upstream = (response.body as { error?: { code?: unknown; message?: unknown } } | null | undefined)?.error;
  const code = typeof upstream?.code === 'string' && upstream.code ? upstream.code : `http_${status ?? 'error'}`;
  const message =
    typeof upstream?.message === 'string' && upstream.message
      ? upstream.message
      : `The upstream answered HTTP ${status ?? 'with an error'} to this request.`;
  return { code, message };
}

/** One error-file row as a row of the one file: with `error` set. */
export function withErrorSet(line: string): string {
  const row = JSON.parse(line) as ResultRow;
  if (row.error || !row.response) return `${line}\n`;
  return `${JSON.stringify({ ...row, error: refusalError(row.response) })}\n`;
}

/**
 * Rewrites each error part as a part of the one file (under `keyOf(i)`), and answers the parts of
 * the one file in order: the output parts, then the rewritten error parts.
 */
export async function oneFileParts(
  blobs: BlobStore,
  outputParts: readonly string[],
  errorParts: readonly string[],
  keyOf: (index: number) => string,
): Promise<{ parts: string[]; written: string[] }> {
  const written: string[] = [];
  for (const [index, part] of errorParts.entries()) {
    const key = keyOf(index);
    const rows = async function* () {
      const input = Readable.from(await blobs.get(part));
      for await (const line of readline.createInterface({ input, crlfDelay: Infinity })) if (line) yield withErrorSet(line);
    };
    await blobs.put(key, linesBody(rows()));
    written.push(key);
  }
  return { parts: [...outputParts, ...written], written };
}
