// A small OpenAI-compatible upstream for tests and benchmarks: node:http, no framework.
//
// It answers chat completions, completions, embeddings and responses (under /v1 and /v4) with
// deterministic bodies, and can be told to be slow, to cap its concurrency, to fail, to rate
// limit, to reset connections or to hang, either by fraction (with a seeded PRNG, so a run is
// reproducible) or deterministically per request (failWhen). It can pad answers to a huge size
// (answerBytes: large embeddings answers reach tens of MB) and answer with an error page that
// echoes the request's headers, Authorization included (echoHeaders, as JSON or HTML). It counts
// what it saw, per status and per "custom key" (the last user message, or the input), so tests
// can assert that nothing was called twice, and it tracks the peak number of requests in flight.
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface FailAnswer {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

export interface FailContext {
  /** The route without its version prefix, e.g. "/chat/completions". */
  path: string;
  /** The custom key: the last user message's text, or the input. */
  key: string;
}

export interface UpstreamSimOptions {
  /** Delay before every answer (ms). Default 0. */
  latencyMs?: number;
  /** Extra random delay in [0, jitterMs) added to latencyMs. Default 0. */
  jitterMs?: number;
  /** Requests beyond this many accepted in flight are answered 429 with `Retry-After: 1`. */
  maxConcurrency?: number;
  /** Fraction of requests answered 500. */
  failRate?: number;
  /** Fraction of requests answered 429. */
  rateLimitRate?: number;
  /** Retry-After (seconds) sent with rateLimitRate 429s; 0 (default) sends `retry-after-ms: 50`. */
  retryAfterSeconds?: number;
  /** Fraction of requests whose socket is destroyed without an answer. */
  resetRate?: number;
  /** Fraction of requests never answered (until the client gives up or the sim closes). */
  hangRate?: number;
  /** Deterministic failures, e.g. `(body) => JSON.stringify(body).includes('FAIL') ? {...} : undefined`. */
  failWhen?: (body: any, context: FailContext) => FailAnswer | undefined;
  /** When set, a request whose `Authorization: Bearer` differs is answered 401. */
  requireApiKey?: string;
  /** Seed of the PRNG behind the fault fractions and the jitter. Default 1. */
  seed?: number;
  /**
   * Pads successful answers to about this many bytes (a `sim_padding` string field beside the
   * usual ones), for all requests or, as a function, per request (undefined: no padding). The
   * padding is built once per size and shared, so the sim itself stays small.
   */
  answerBytes?: number | ((context: FailContext) => number | undefined);
  /**
   * Answers every request with an error that echoes the request's headers (Authorization
   * included), as an upstream with a careless error page does: a JSON error envelope, or an HTML
   * page (Content-Type text/html). `status` defaults to 400.
   */
  echoHeaders?: { format: 'json' | 'html'; status?: number };
}

export interface UpstreamSimStats {
  /** Every request received, whatever its answer. */
  requests: number;
  /** Answers by HTTP status ("200", "429", ...), plus "reset" and "hang". */
  byStatus: Record<string, number>;
  /** The most requests open at once (including those then rejected by maxConcurrency). */
  peakInFlight: number;
  inFlight: number;
  /** Calls per custom key (the last user message, or the input). */
  callsByCustomKey: Map<string, number>;
}

export interface UpstreamSim {
  /** e.g. http://127.0.0.1:PORT/v1 */
  baseURL: string;
  /** e.g. http://127.0.0.1:PORT */
  origin: string;
  port: number;
  stats(): UpstreamSimStats;
  /** Zero the counters (requests still in flight stay counted in inFlight). */
  reset(): void;
  /** Change options; a `seed` restarts the PRNG. */
  configure(partial: Partial<UpstreamSimOptions>): void;
  /** Stop listening and destroy every open socket, hung requests included. */
  close(): Promise<void>;
}

/** mulberry32: a tiny, fast, deterministic PRNG returning numbers in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** A deterministic stand-in for a tokenizer: about four characters a token, at least one. */
export function countTokens(text: string): number {
  return Math.max(1, Math.ceil(text.length / 4));
}

function errorEnvelope(message: string, type: string, code: string | null, param: string | null = null) {
  return { error: { message, type, param, code } };
}

/** The text of a message's content: a string, or the text parts of an array. */
function contentText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content.map((part) => (part && typeof part === 'object' && typeof part.text === 'string' ? part.text : '')).join('');
  }
  return content === undefined || content === null ? '' : JSON.stringify(content);
}

function inputText(input: unknown): string {
  if (typeof input === 'string') return input;
  if (Array.isArray(input)) {
    // Responses API input items: take the last user message; otherwise join strings/tokens.
    const messages = input.filter((item) => item && typeof item === 'object' && 'content' in item);
    if (messages.length > 0) {
      const users = messages.filter((m) => m.role === 'user');
      return contentText((users.at(-1) ?? messages.at(-1)).content);
    }
    return input.map((x) => (typeof x === 'string' ? x : JSON.stringify(x))).join('\n');
  }
  return input === undefined || input === null ? '' : JSON.stringify(input);
}

/** The custom key of a request body: what the tests recognise a request by. */
export function customKeyOf(path: string, body: any): string {
  if (!body || typeof body !== 'object') return '';
  if (path === '/chat/completions' && Array.isArray(body.messages)) {
    const users = body.messages.filter((m: any) => m && m.role === 'user');
    const last = users.at(-1) ?? body.messages.at(-1);
    return contentText(last?.content);
  }
  if (path === '/completions') return inputText(body.prompt);
  return inputText(body.input);
}

const ROUTES = new Set(['/chat/completions', '/completions', '/embeddings', '/responses']);
const EMBEDDING_DIMENSIONS = 8;

export async function startUpstreamSim(options: UpstreamSimOptions = {}): Promise<UpstreamSim> {
  let opts: UpstreamSimOptions = { ...options };
  let faultRandom = mulberry32(opts.seed ?? 1);
  let jitterRandom = mulberry32((opts.seed ?? 1) ^ 0x9e3779b9);

  let requests = 0;
  let byStatus: Record<string, number> = {};
  let peakInFlight = 0;
  let inFlight = 0; // every open request
  let accepted = 0; // open requests not rejected by maxConcurrency
  let callsByCustomKey = new Map<string, number>();
  let serial = 0;

  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();

  const count = (status: string) => {
    byStatus[status] = (byStatus[status] ?? 0) + 1;
  };

  const send = (res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    if (res.destroyed || res.writableEnded) return;
    count(String(status));
    const text = JSON.stringify(body);
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(text),
      ...headers,
    });
    res.end(text);
  };

  const paddings = new Map<number, Buffer>();
  const PAD_MARK = '\u0000sim-padding\u0000';
  /** Sends `body` with a `sim_padding` field that brings it to about `bytes` bytes, writing the shared padding as is. */
  const sendPadded = (res: http.ServerResponse, body: object, bytes: number) => {
    if (res.destroyed || res.writableEnded) return;
    count('200');
    const [before, after] = JSON.stringify({ ...body, sim_padding: PAD_MARK }).split(JSON.stringify(PAD_MARK).slice(1, -1)) as [
      string,
      string,
    ];
    const size = Math.max(0, bytes - Buffer.byteLength(before) - Buffer.byteLength(after));
    let padding = paddings.get(size);
    if (!padding) {
      padding = Buffer.alloc(size, 'x');
      paddings.set(size, padding);
    }
    res.writeHead(200, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(before) + size + Buffer.byteLength(after),
    });
    res.write(before);
    res.write(padding);
    res.end(after);
  };

  /** An error page that quotes the request's headers back. */
  const sendEcho = (req: http.IncomingMessage, res: http.ServerResponse, echo: NonNullable<UpstreamSimOptions['echoHeaders']>) => {
    if (res.destroyed || res.writableEnded) return;
    const status = echo.status ?? 400;
    count(String(status));
    const lines = Object.entries(req.headers).map(([name, value]) => `${name}: ${Array.isArray(value) ? value.join(', ') : value}`);
    const text =
      echo.format === 'json'
        ? JSON.stringify(
            errorEnvelope(`Request rejected. Headers received: ${JSON.stringify(req.headers)}`, 'invalid_request_error', 'echo'),
          )
        : `<html><head><title>${status} Bad Request</title></head><body><h1>${status}</h1><pre>\n${lines.join('\n')}\n</pre></body></html>\n`;
    res.writeHead(status, {
      'content-type': echo.format === 'json' ? 'application/json' : 'text/html; charset=utf-8',
      'content-length': Buffer.byteLength(text),
    });
    res.end(text);
  };

  const later = (ms: number, fn: () => void) => {
    if (ms <= 0) return fn();
    const timer = setTimeout(() => {
      timers.delete(timer);
      fn();
    }, ms);
    timers.add(timer);
  };

  const answer = (path: string, body: any, id: string): unknown => {
    const created = Math.floor(Date.now() / 1000);
    const model = typeof body.model === 'string' ? body.model : 'sim-model';
    switch (path) {
      case '/chat/completions': {
        const prompt = Array.isArray(body.messages) ? body.messages.map((m: any) => contentText(m?.content)).join('\n') : '';
        const content = `echo: ${customKeyOf(path, body)}`;
        const promptTokens = countTokens(prompt);
        const completionTokens = countTokens(content);
        return {
          id: `chatcmpl-${id}`,
          object: 'chat.completion',
          created,
          model,
          choices: [
            {
              index: 0,
              message: { role: 'assistant', content, refusal: null },
              logprobs: null,
              finish_reason: 'stop',
            },
          ],
          usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens },
          system_fingerprint: 'fp_sim',
        };
      }
      case '/completions': {
        const prompt = inputText(body.prompt);
        const text = `echo: ${prompt}`;
        const promptTokens = countTokens(prompt);
        const completionTokens = countTokens(text);
        return {
          id: `cmpl-${id}`,
          object: 'text_completion',
          created,
          model,
          choices: [{ index: 0, text, logprobs: null, finish_reason: 'stop' }],
          usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens },
        };
      }
      case '/embeddings': {
        const inputs: unknown[] =
          Array.isArray(body.input) && body.input.some((x: unknown) => typeof x === 'string') ? body.input : [body.input];
        let tokens = 0;
        const data = inputs.map((input, index) => {
          const text = typeof input === 'string' ? input : JSON.stringify(input ?? '');
          tokens += countTokens(text);
          const random = mulberry32(fnv1a(text));
          const vector = Array.from({ length: EMBEDDING_DIMENSIONS }, () => Math.round((random() * 2 - 1) * 1e6) / 1e6);
          // The official SDKs ask for base64 (little-endian float32) and decode it themselves.
          const embedding = body.encoding_format === 'base64' ? Buffer.from(new Float32Array(vector).buffer).toString('base64') : vector;
          return { object: 'embedding', index, embedding };
        });
        return { object: 'list', data, model, usage: { prompt_tokens: tokens, total_tokens: tokens } };
      }
      default: {
        // '/responses'
        const input = inputText(body.input);
        const text = `echo: ${input}`;
        const inputTokens = countTokens(`${typeof body.instructions === 'string' ? body.instructions : ''}${input}`);
        const outputTokens = countTokens(text);
        return {
          id: `resp_${id}`,
          object: 'response',
          created_at: created,
          status: 'completed',
          error: null,
          incomplete_details: null,
          instructions: body.instructions ?? null,
          model,
          output: [
            {
              type: 'message',
              id: `msg_${id}`,
              status: 'completed',
              role: 'assistant',
              content: [{ type: 'output_text', text, annotations: [] }],
            },
          ],
          parallel_tool_calls: true,
          temperature: body.temperature ?? 1,
          top_p: body.top_p ?? 1,
          tools: [],
          usage: {
            input_tokens: inputTokens,
            input_tokens_details: { cached_tokens: 0 },
            output_tokens: outputTokens,
            output_tokens_details: { reasoning_tokens: 0 },
            total_tokens: inputTokens + outputTokens,
          },
        };
      }
    }
  };

  const handle = (req: http.IncomingMessage, res: http.ServerResponse, raw: string, onAccepted: () => void, isOpen: () => boolean) => {
    const id = (++serial).toString(16).padStart(8, '0');
    res.setHeader('x-request-id', `req_sim_${id}`);

    const url = req.url ?? '/';
    const pathname = url.split('?', 1)[0] ?? '/';
    const match = /^\/v[14](\/.*)$/.exec(pathname);
    const path = match?.[1] ?? '';
    if (req.method !== 'POST' || !ROUTES.has(path)) {
      send(res, 404, errorEnvelope(`Unknown request URL: ${req.method} ${pathname}.`, 'invalid_request_error', 'unknown_url'));
      return;
    }

    if (opts.requireApiKey !== undefined && req.headers.authorization !== `Bearer ${opts.requireApiKey}`) {
      send(res, 401, errorEnvelope('Incorrect API key provided.', 'invalid_request_error', 'invalid_api_key'));
      return;
    }

    let body: any;
    try {
      body = JSON.parse(raw);
    } catch {
      send(res, 400, errorEnvelope('We could not parse the JSON body of your request.', 'invalid_request_error', null));
      return;
    }
    if (!body || typeof body !== 'object' || Array.isArray(body)) {
      send(res, 400, errorEnvelope('The body must be a JSON object.', 'invalid_request_error', null));
      return;
    }

    const key = customKeyOf(path, body);
    callsByCustomKey.set(key, (callsByCustomKey.get(key) ?? 0) + 1);

    if (opts.maxConcurrency !== undefined && accepted >= opts.maxConcurrency) {
      send(res, 429, errorEnvelope('Too many concurrent requests.', 'requests', 'rate_limit_exceeded'), { 'retry-after': '1' });
      return;
    }
    onAccepted();

    // One draw per accepted request, in arrival order: the fault bands are laid end to end.
    const u = faultRandom();
    let edge = 0;
    const within = (rate: number | undefined) => u < (edge += rate ?? 0);
    const fault = within(opts.resetRate)
      ? 'reset'
      : within(opts.hangRate)
        ? 'hang'
        : within(opts.rateLimitRate)
          ? 'rateLimit'
          : within(opts.failRate)
            ? 'fail'
            : undefined;
    const deterministic = fault === undefined ? opts.failWhen?.(body, { path, key }) : undefined;

    if (fault === 'hang') {
      count('hang');
      return; // answered never; the sockets are destroyed by the client or close()
    }

    const delay = (opts.latencyMs ?? 0) + (opts.jitterMs ? jitterRandom() * opts.jitterMs : 0);
    later(delay, () => {
      if (!isOpen()) return;
      switch (fault) {
        case 'reset':
          count('reset');
          req.socket.destroy();
          return;
        case 'rateLimit': {
          const seconds = opts.retryAfterSeconds ?? 0;
          const headers: Record<string, string> = seconds > 0 ? { 'retry-after': String(seconds) } : { 'retry-after-ms': '50' };
          send(res, 429, errorEnvelope('Rate limit reached for requests.', 'requests', 'rate_limit_exceeded'), headers);
          return;
        }
        case 'fail':
          send(res, 500, errorEnvelope('The server had an error while processing your request.', 'server_error', null));
          return;
      }
      if (deterministic) {
        send(res, deterministic.status, deterministic.body, deterministic.headers);
        return;
      }
      if (opts.echoHeaders) {
        sendEcho(req, res, opts.echoHeaders);
        return;
      }
      const padTo = typeof opts.answerBytes === 'function' ? opts.answerBytes({ path, key }) : opts.answerBytes;
      if (padTo !== undefined) {
        sendPadded(res, answer(path, body, id) as object, padTo);
        return;
      }
      send(res, 200, answer(path, body, id));
    });
  };

  const server = http.createServer({ keepAliveTimeout: 30_000 }, (req, res) => {
    requests++;
    inFlight++;
    if (inFlight > peakInFlight) peakInFlight = inFlight;
    let wasAccepted = false;
    let done = false;
    res.once('close', () => {
      if (done) return;
      done = true;
      inFlight--;
      if (wasAccepted) accepted--;
    });
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('error', () => {});
    req.on('end', () => {
      if (done) return;
      handle(
        req,
        res,
        Buffer.concat(chunks).toString('utf8'),
        () => {
          wasAccepted = true;
          accepted++;
        },
        () => !done,
      );
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  server.on('clientError', (_err, socket) => socket.destroy());

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const origin = `http://127.0.0.1:${port}`;

  return {
    baseURL: `${origin}/v1`,
    origin,
    port,
    stats: () => ({
      requests,
      byStatus: { ...byStatus },
      peakInFlight,
      inFlight,
      callsByCustomKey: new Map(callsByCustomKey),
    }),
    reset: () => {
      requests = 0;
      byStatus = {};
      peakInFlight = inFlight;
      callsByCustomKey = new Map();
    },
    configure: (partial) => {
      opts = { ...opts, ...partial };
      if ('seed' in partial) {
        faultRandom = mulberry32(opts.seed ?? 1);
        jitterRandom = mulberry32((opts.seed ?? 1) ^ 0x9e3779b9);
      }
    },
    close: async () => {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}
