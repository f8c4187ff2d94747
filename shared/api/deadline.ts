// No route outlives the gateway in front of it: API Gateway answers its own
// `503 {"message":"Service Unavailable"}` after 30 s, whatever the function does. With a deadline
// (API_ROUTE_DEADLINE; 25 s in the API Lambda, off locally), a route still running when it comes is
// told (deadlineOf(request) aborts) and gets a short grace to answer for itself: a route whose work
// can go on elsewhere hands it off there and answers (POST /uploads/{id}/complete). One that has
// not answered by then gets 503 `request_timeout` in OpenAI's envelope, with Retry-After; its work
// goes on in this process where the process goes on (locally), and is abandoned where it does not.
import type { Context, MiddlewareHandler } from 'hono';
import { errorMessage, type Logger } from '../log.js';
import { unavailable } from './errors.js';

/** What the route has for itself once the deadline came, to answer (its hand-off, its own 503). */
export const DEADLINE_GRACE_MS = 2_000;
export const DEADLINE_RETRY_AFTER_SECONDS = 5;

// By the request's context: a middleware may replace the Request itself (bodyLimit wraps its body).
const deadlines = new WeakMap<Context, AbortSignal>();

/** Aborts when the request's deadline comes; undefined when requests have none. */
export function deadlineOf(c: Context): AbortSignal | undefined {
  return deadlines.get(c);
}

export function routeDeadline(options: { deadlineMs: number | undefined; graceMs?: number; log: Logger }): MiddlewareHandler {
  const { deadlineMs, log } = options;
  const graceMs = options.graceMs ?? DEADLINE_GRACE_MS;
  return async (c, next) => {
    if (deadlineMs === undefined) return next();
    const deadline = new AbortController();
    deadlines.set(c, deadline.signal);
    // Hono answers a route's error through onError inside next(): it never rejects.
    const route = next().then(() => 'answered' as const);
    if ((await within(route, deadlineMs)) === 'answered') return;
    deadline.abort();
    if ((await within(route, graceMs)) === 'answered') return;
    route.catch((error: unknown) => log.log('warn', 'a route answered after its deadline', { error: errorMessage(error) }));
    log.log('warn', 'a route passed its deadline; answered 503', { method: c.req.method, path: c.req.path, deadlineMs });
    const error = unavailable(
      `The request did not finish within ${Math.round(deadlineMs / 1000)} s. What it started may still be going on: repeat the request.`,
      'request_timeout',
      DEADLINE_RETRY_AFTER_SECONDS,
    );
    c.res = c.json(error.toBody(), error.status, error.headers);
  };
}

async function within<T>(work: Promise<T>, ms: number): Promise<T | 'late'> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => {
    timer = setTimeout(() => resolve('late'), ms);
  });
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}
