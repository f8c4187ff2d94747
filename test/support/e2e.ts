// Helpers for end-to-end tests that drive the real service with the official openai SDK.

import { createReadStream } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import type { Batch } from 'openai/resources/batches';

export const TERMINAL = ['completed', 'failed', 'expired', 'cancelled'];

export interface ResultLine {
  id: string;
  custom_id: string;
  response: { status_code: number; request_id: string; body: any } | null;
  error: { code: string; message: string } | null;
}

export function chatLine(customId: string, content: string, model = 'sim-model', url = '/v1/chat/completions') {
  return { custom_id: customId, method: 'POST', url, body: { model, messages: [{ role: 'user', content }] } };
}

export function chatLines(count: number, options: { prefix?: string; model?: string } = {}) {
  return Array.from({ length: count }, (_, i) => chatLine(`req-${i + 1}`, `${options.prefix ?? 'question'} ${i + 1}`, options.model));
}

export async function writeJsonl(lines: unknown[], name = 'input.jsonl'): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'batch-e2e-'));
  const file = path.join(dir, name);
  await writeFile(file, `${lines.map((line) => (typeof line === 'string' ? line : JSON.stringify(line))).join('\n')}\n`);
  return file;
}

export function client(baseURL: string, apiKey = 'test-key'): OpenAI {
  return new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 30_000 });
}

export async function upload(openai: OpenAI, file: string) {
  return openai.files.create({ file: createReadStream(file), purpose: 'batch' });
}

/** Uploads the lines and creates a batch over them. */
export async function submit(
  openai: OpenAI,
  lines: unknown[],
  options: { endpoint?: string; window?: string; metadata?: Record<string, string> } = {},
) {
  const input = await upload(openai, await writeJsonl(lines));
  return openai.batches.create({
    input_file_id: input.id,
    endpoint: (options.endpoint ?? '/v1/chat/completions') as '/v1/chat/completions',
    completion_window: (options.window ?? '24h') as '24h',
    ...(options.metadata ? { metadata: options.metadata } : {}),
  });
}

export async function waitForBatch(
  openai: OpenAI,
  id: string,
  until: (batch: Batch) => boolean = (batch) => TERMINAL.includes(batch.status),
  timeoutMs = 60_000,
): Promise<Batch> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const batch = await openai.batches.retrieve(id);
    if (until(batch)) return batch;
    // An ended batch changes no more: waiting on would only reach the timeout.
    if (TERMINAL.includes(batch.status))
      throw new Error(`batch ${id} ended ${batch.status} without meeting the wait: ${JSON.stringify(batch.request_counts)}`);
    if (Date.now() > deadline)
      throw new Error(`batch ${id} still ${batch.status} after ${timeoutMs} ms: ${JSON.stringify(batch.request_counts)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export async function readResults(openai: OpenAI, fileId: string | null | undefined): Promise<ResultLine[]> {
  if (!fileId) return [];
  const text = await (await openai.files.content(fileId)).text();
  return text
    .split('\n')
    .filter((line) => line.trim())
    .map((line) => JSON.parse(line) as ResultLine);
}

/** Output and error lines of a finished batch, and a check that every id appears exactly once. */
export async function collectResults(openai: OpenAI, batch: Batch) {
  const output = await readResults(openai, batch.output_file_id);
  const errors = await readResults(openai, batch.error_file_id);
  const seen = new Map<string, number>();
  for (const line of [...output, ...errors]) seen.set(line.custom_id, (seen.get(line.custom_id) ?? 0) + 1);
  const duplicates = [...seen].filter(([, n]) => n > 1).map(([id]) => id);
  return { output, errors, ids: new Set(seen.keys()), duplicates };
}
