// What the validation tests share: request lines, a file streamed in chunks, and the errors of a result.
import { type ValidationOptions, type ValidationResult, validateBatchInput } from '../../../shared/input/validate.js';

export const ENDPOINT = '/v1/chat/completions';

export const OPTIONS: ValidationOptions = {
  endpoint: ENDPOINT,
  maxRequests: 1000,
  maxLineBytes: 10_000,
  maxErrors: 100,
  chunkMaxRequests: 100,
  chunkMaxBytes: 1_000_000,
};

/** A well-formed request line (no newline), with `extra` top-level fields and `body` fields over the defaults. */
export function request(id: string, extra: Record<string, unknown> = {}, body: Record<string, unknown> = {}): string {
  return JSON.stringify({
    custom_id: id,
    method: 'POST',
    url: ENDPOINT,
    body: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: `hello ${id}` }], ...body },
    ...extra,
  });
}

export async function* chunks(data: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

export function validate(text: string | Buffer, options: Partial<ValidationOptions> = {}, chunkSize = 4096) {
  const data = typeof text === 'string' ? Buffer.from(text) : text;
  return validateBatchInput(chunks(data, chunkSize), { ...OPTIONS, reread: () => chunks(data, chunkSize), ...options });
}

export function errorsOf(result: ValidationResult) {
  if (result.ok) throw new Error('expected the file to be invalid');
  return result.errors;
}

export function codes(result: ValidationResult) {
  return errorsOf(result).map((e) => [e.line, e.code, e.param]);
}
