// `batch-test-model`: DashScope's dry-run model, answered in-process with no upstream call, so a
// batch can be tried end to end (and `npm start` works) with no upstream configured at all.
import { randomToken } from '../ids.js';
import type { Upstream, UpstreamRequest, UpstreamResult } from './types.js';

export const TEST_MODEL = 'batch-test-model';

/** DashScope's dry-run endpoint: chat completions of TEST_MODEL only, never sent upstream. */
export const DRY_RUN_ENDPOINT = '/v1/chat/ds-test';
/** DashScope's limits of a dry run's input file. */
export const DRY_RUN_LIMITS = { maxBytes: 1024 * 1024, maxRequests: 100 };

/** A rough token count: about four characters a token, as tokenizers average on English text. */
function tokens(text: string): number {
  return Math.max(1, Math.ceil(text.length / 4));
}

function textOf(value: unknown): string {
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) return value.map(textOf).join(' ');
  if (value && typeof value === 'object') {
    const record = value as Record<string, unknown>;
    if ('content' in record) return textOf(record.content);
    if ('text' in record) return textOf(record.text);
  }
  return '';
}

function lastUserText(body: Record<string, unknown>): string {
  const messages = Array.isArray(body.messages) ? body.messages : [];
  for (let i = messages.length - 1; i >= 0; i--) {
    const message = messages[i] as Record<string, unknown> | undefined;
    if (message?.role === 'user') return textOf(message.content);
  }
  return textOf(body.input ?? body.prompt ?? '');
}

function answer(body: unknown): UpstreamResult {
  return { kind: 'response', statusCode: 200, requestId: `req_${randomToken(20)}`, body };
}

const created = () => Math.floor(Date.now() / 1000);

export function respondAsTestModel(request: UpstreamRequest): UpstreamResult {
  const { body } = request;
  const prompt = lastUserText(body);
  const reply = `This is a test response from ${TEST_MODEL}.`;
  const promptTokens = tokens(prompt);
  const completionTokens = tokens(reply);
  switch (request.url) {
    case '/v1/chat/completions':
    case DRY_RUN_ENDPOINT:
      return answer({
        id: `chatcmpl-${randomToken()}`,
        object: 'chat.completion',
        created: created(),
        model: TEST_MODEL,
        choices: [{ index: 0, message: { role: 'assistant', content: reply }, logprobs: null, finish_reason: 'stop' }],
        usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens },
      });
    case '/v1/completions':
      return answer({
        id: `cmpl-${randomToken()}`,
        object: 'text_completion',
        created: created(),
        model: TEST_MODEL,
        choices: [{ index: 0, text: reply, logprobs: null, finish_reason: 'stop' }],
        usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens },
      });
    case '/v1/embeddings': {
      const inputs = Array.isArray(body.input) ? body.input : [body.input];
      const inputTokens = inputs.reduce((sum: number, input) => sum + tokens(textOf(input)), 0);
      return answer({
        object: 'list',
        model: TEST_MODEL,
        data: inputs.map((input, index) => ({ object: 'embedding', index, embedding: embeddingOf(textOf(input)) })),
        usage: { prompt_tokens: inputTokens, total_tokens: inputTokens },
      });
    }
    case '/v1/responses':
      return answer({
        id: `resp_${randomToken()}`,
        object: 'response',
        created_at: created(),
        status: 'completed',
        model: TEST_MODEL,
        output: [
          {
            type: 'message',
            id: `msg_${randomToken()}`,
            status: 'completed',
            role: 'assistant',
            content: [{ type: 'output_text', text: reply, annotations: [] }],
          },
        ],
        usage: {
          input_tokens: promptTokens,
          input_tokens_details: { cached_tokens: 0 },
          output_tokens: completionTokens,
          output_tokens_details: { reasoning_tokens: 0 },
          total_tokens: promptTokens + completionTokens,
        },
      });
    default:
      return {
        kind: 'response',
        statusCode: 400,
        requestId: `req_${randomToken(20)}`,
        body: {
          error: {
            message: `${TEST_MODEL} does not serve ${request.url}; it serves /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/responses.`,
            type: 'invalid_request_error',
            param: 'url',
            code: 'unsupported_endpoint',
          },
        },
      };
  }
}

/** Eight numbers that depend only on the text, so the same input always embeds the same. */
function embeddingOf(text: string): number[] {
  const vector = new Array<number>(8).fill(0);
  for (let i = 0; i < text.length; i++) vector[i % 8]! += text.charCodeAt(i);
  const norm = Math.hypot(...vector) || 1;
  return vector.map((v) => Number((v / norm).toFixed(6)));
}

export const testModelUpstream: Upstream = {
  async send(request, { mayStart }) {
    return mayStart() ? respondAsTestModel(request) : undefined;
  },
};
