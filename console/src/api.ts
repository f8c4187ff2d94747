// Talking to the service from the page: the same HTTP API the SDKs use, with the key from the
// tab's session storage in the Authorization header (never in a URL).

export interface BatchObject {
  id: string;
  status: string;
  endpoint: string;
  model?: string | null;
  input_file_id: string;
  output_file_id: string | null;
  error_file_id: string | null;
  created_at: number;
  in_progress_at: number | null;
  finalizing_at: number | null;
  completed_at: number | null;
  failed_at: number | null;
  expired_at: number | null;
  cancelling_at: number | null;
  cancelled_at: number | null;
  expires_at: number | null;
  request_counts: { total: number; completed: number; failed: number };
  errors: { data: { code?: string; message?: string; line?: number | null }[] } | null;
  metadata: Record<string, string> | null;
  x_retry_of?: string;
  x_retried_by?: string;
}

export interface ResultLine {
  id: string;
  custom_id: string;
  response: { status_code: number; body: unknown } | null;
  error: { code: string; message: string } | null;
}

export interface ResultsPage {
  data: ResultLine[];
  has_more: boolean;
  next_after: string;
}

export interface UsageSummary {
  input_tokens: number;
  output_tokens: number;
  total_tokens: number;
  cost: { currency: string; total: number } | null;
}

/** An answer of the service that is not a success, or no answer at all (status 0). */
export class ApiFailure extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code: string | null,
  ) {
    super(message);
    this.name = 'ApiFailure';
  }
}

const KEY_ITEM = 'batch-console-api-key';

export const session = {
  key: (): string | null => sessionStorage.getItem(KEY_ITEM),
  signIn: (key: string) => sessionStorage.setItem(KEY_ITEM, key),
  signOut: () => sessionStorage.removeItem(KEY_ITEM),
};

/** The API's base: the console is served at <prefix>/console/, the API at <prefix>/v1. */
const base = `${location.pathname.replace(/\/console(\/.*)?$/, '')}/v1`;

async function call(path: string, init: RequestInit = {}, key = session.key()): Promise<Response> {
  let response: Response;
  try {
    response = await fetch(`${base}${path}`, {
      ...init,
      headers: { ...(init.body ? { 'content-type': 'application/json' } : {}), authorization: `Bearer ${key ?? ''}` },
      cache: 'no-store',
    });
  } catch {
    throw new ApiFailure(0, 'The service could not be reached. Check your connection; the page keeps trying.', null);
  }
  if (response.ok) return response;
  let message = `The service answered HTTP ${response.status}.`;
  let code: string | null = null;
  try {
    const envelope = (await response.json()) as { error?: { message?: string; code?: string | null } };
    if (envelope.error?.message) message = envelope.error.message;
    code = envelope.error?.code ?? null;
  } catch {
    // Not an error envelope (a gateway's page): the status says enough.
  }
  throw new ApiFailure(response.status, message, code);
}

async function json<T>(path: string, init?: RequestInit, key?: string): Promise<T> {
  return (await call(path, init, key)).json() as Promise<T>;
}

export const api = {
  listBatches: (key?: string) => json<{ data: BatchObject[] }>('/batches?limit=100', undefined, key),
  batch: (id: string) => json<BatchObject>(`/batches/${encodeURIComponent(id)}`),
  cancel: (id: string) => json<BatchObject>(`/batches/${encodeURIComponent(id)}/cancel`, { method: 'POST' }),
  retry: (id: string) => json<BatchObject>(`/x/batches/${encodeURIComponent(id)}/retry`, { method: 'POST', body: '{}' }),
  results: (id: string, after?: string) =>
    json<ResultsPage>(`/x/batches/${encodeURIComponent(id)}/results?limit=50${after ? `&after=${encodeURIComponent(after)}` : ''}`),
  usage: (id: string) => json<UsageSummary>(`/x/batches/${encodeURIComponent(id)}/usage`),
  /** A file's bytes, fetched with the key and handed to the browser as a download. */
  async download(fileId: string, filename: string): Promise<void> {
    const blob = await (await call(`/files/${encodeURIComponent(fileId)}/content`)).blob();
    const url = URL.createObjectURL(blob);
    const link = document.createElement('a');
    link.href = url;
    link.download = filename;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  },
};

/** A failure in words for the person at the page. */
export function inWords(error: unknown): string {
  if (!(error instanceof ApiFailure)) return `Something went wrong in the page: ${error instanceof Error ? error.message : String(error)}`;
  if (error.status === 401) return `This API key was not accepted: ${error.message} Sign in again with a key of your project.`;
  if (error.status === 429 || error.status === 503) return `The service is busy (${error.message}). The page tries again shortly.`;
  return error.message;
}
