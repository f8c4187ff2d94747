// The lines of the output and error files, in OpenAI's shape:
// {"id", "custom_id", "response": {"status_code", "request_id", "body"} | null, "error": {"code", "message"} | null}
import { newRequestLineId } from '../ids.js';
import type { UpstreamResult } from '../upstream/types.js';
import { type UsageTotals, ZERO_USAGE } from './model.js';

export type UnrunReason = 'batch_cancelled' | 'batch_expired' | 'batch_failed';

export const UNRUN_MESSAGES: Record<UnrunReason, string> = {
  batch_cancelled: 'This request was not run because the batch was cancelled.',
  batch_expired: 'This request was not run because the batch expired before it could be completed.',
  batch_failed: 'This request was not run because the batch failed (see the batch errors).',
};

export function resultLine(customId: string, result: UpstreamResult): string {
  const line =
    result.kind === 'response'
      ? {
          id: newRequestLineId(),
          custom_id: customId,
          response: { status_code: result.statusCode, request_id: result.requestId, body: result.body },
          error: null,
        }
      : { id: newRequestLineId(), custom_id: customId, response: null, error: { code: result.code, message: result.message } };
  return `${JSON.stringify(line)}\n`;
}

export function unrunLine(customId: string, reason: UnrunReason): string {
  return resultLine(customId, { kind: 'error', code: reason, message: UNRUN_MESSAGES[reason] });
}

const UNFINISHED_MESSAGES: Record<UnrunReason, string> = {
  batch_cancelled: 'This request was not completed because the batch was cancelled while it was being retried.',
  batch_expired: 'This request was not completed before the batch expired: the upstream had not given a final answer.',
  batch_failed: 'This request was not completed because the batch failed while it was being retried.',
};

/** A line of a chunk that failed on every delivery: it never got a final answer that could be kept. */
export function chunkFailedLine(customId: string, message: string): string {
  return resultLine(customId, { kind: 'error', code: 'chunk_failed', message });
}

/**
 * A request whose retries were cut short by the window or a cancel: the error names the reason,
 * and `response` keeps the upstream's last status and body (null when the last try got no answer).
 */
export function unfinishedLine(customId: string, reason: UnrunReason, last: UpstreamResult): string {
  const message = last.kind === 'error' ? `${UNFINISHED_MESSAGES[reason]} Last attempt: ${last.message}` : UNFINISHED_MESSAGES[reason];
  const line = {
    id: newRequestLineId(),
    custom_id: customId,
    response: last.kind === 'response' ? { status_code: last.statusCode, request_id: last.requestId, body: last.body } : null,
    error: { code: reason, message },
  };
  return `${JSON.stringify(line)}\n`;
}

export function isSuccess(result: UpstreamResult): boolean {
  return result.kind === 'response' && result.statusCode >= 200 && result.statusCode < 300;
}

const count = (value: unknown): number => (typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : 0);

/** Token usage of one response body: chat/completions/embeddings (`prompt_tokens`…) or responses (`input_tokens`…). */
export function usageOf(body: unknown): UsageTotals {
  const usage = (body as { usage?: Record<string, unknown> } | null)?.usage;
  if (!usage || typeof usage !== 'object') return ZERO_USAGE;
  const inputDetails = (usage.input_tokens_details ?? usage.prompt_tokens_details) as Record<string, unknown> | undefined;
  const outputDetails = (usage.output_tokens_details ?? usage.completion_tokens_details) as Record<string, unknown> | undefined;
  const inputTokens = count(usage.input_tokens ?? usage.prompt_tokens);
  const outputTokens = count(usage.output_tokens ?? usage.completion_tokens);
  return {
    inputTokens,
    cachedTokens: count(inputDetails?.cached_tokens),
    outputTokens,
    reasoningTokens: count(outputDetails?.reasoning_tokens),
    totalTokens: count(usage.total_tokens) || inputTokens + outputTokens,
  };
}

export function addUsage(a: UsageTotals, b: UsageTotals): UsageTotals {
  return {
    inputTokens: a.inputTokens + b.inputTokens,
    cachedTokens: a.cachedTokens + b.cachedTokens,
    outputTokens: a.outputTokens + b.outputTokens,
    reasoningTokens: a.reasoningTokens + b.reasoningTokens,
    totalTokens: a.totalTokens + b.totalTokens,
  };
}
