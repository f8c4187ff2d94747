// The commands that use the service's extension routes (/v1/x/): retry a batch's failed lines, and
// read its result lines while it runs. The official SDK reaches them with client.get / client.post.
import type OpenAI from 'openai';
import type { Batch } from 'openai/resources/batches';
import { UsageError } from './exit.js';

export type RetryBatch = Batch & { x_retry_of?: string; x_retried_by?: string };

export interface RetrySelection {
  codes?: string[];
  statuses?: (number | string)[];
}

/** `--codes 429 5xx batch_expired`: HTTP statuses (a number, or a class such as 5xx) and error codes, in one list. */
export function retrySelection(values: string[] | undefined): RetrySelection {
  if (!values || values.length === 0) return {};
  const codes: string[] = [];
  const statuses: (number | string)[] = [];
  for (const value of values
    .flatMap((v) => v.split(','))
    .map((v) => v.trim())
    .filter(Boolean)) {
    if (/^[1-5]\d\d$/.test(value)) statuses.push(Number(value));
    else if (/^[1-5]xx$/i.test(value)) statuses.push(value.toLowerCase());
    else if (/^[A-Za-z][\w.-]*$/.test(value)) codes.push(value);
    else throw new UsageError(`--codes: ${JSON.stringify(value)} is neither an HTTP status (429, 5xx) nor an error code (batch_expired)`);
  }
  return { codes, statuses };
}

/** Creates the retry batch of `id`: by default its retriable lines (408, 409, 429, 5xx, batch_expired, batch_cancelled). */
export async function retryBatch(client: OpenAI, id: string, selection: RetrySelection): Promise<RetryBatch> {
  return client.post<RetryBatch>(`/x/batches/${encodeURIComponent(id)}/retry`, { body: selection });
}

interface ResultsPage {
  data: unknown[];
  has_more: boolean;
  next_after: string;
}

/** Every result line recorded so far, page by page, each handed to `emit` as it comes. */
export async function eachResult(client: OpenAI, id: string, emit: (line: unknown) => void, pageSize = 500): Promise<number> {
  let after: string | undefined;
  let count = 0;
  for (;;) {
    const page = await client.get<ResultsPage>(`/x/batches/${encodeURIComponent(id)}/results`, {
      query: { limit: pageSize, ...(after ? { after } : {}) },
    });
    for (const line of page.data) emit(line);
    count += page.data.length;
    after = page.next_after;
    if (!page.has_more) return count;
  }
}

/** The result line of one custom_id (a 404 when there is none yet). */
export async function resultOf(client: OpenAI, id: string, customId: string): Promise<unknown> {
  return client.get(`/x/batches/${encodeURIComponent(id)}/results`, { query: { custom_id: customId } });
}
