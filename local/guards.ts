// The last lines of defence of the `npm start` process. Each error that reaches one is a bug to
// fix where it arose (every stream of a request has its own error listener, every route its error
// envelope); these only make sure such a bug costs one request, not the service for every tenant,
// and that what is written about it is one structured line: no stack, no request bytes, no key.

import type { Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { format } from 'node:util';
import { errorMessage, type Logger, type LogLevel } from '../shared/log.js';

/** The parser's codes for a client that went away (an ordinary dropped upload), not a malformed request. */
const CLIENT_LEFT = new Set(['ECONNRESET', 'EPIPE', 'HPE_INVALID_EOF_STATE']);
/** The most of a library's console text one log line carries. */
const MAX_CONSOLE_TEXT = 1_000;

export interface ProcessGuard {
  /** Errors that escaped every handler since start: thrown with no catch, or rejected with no handler. */
  escapedErrors(): number;
}

/**
 * Logs an uncaught exception or an unhandled rejection as one line and counts it, instead of letting
 * Node print a stack trace and exit. Also turns what libraries write with console.* (the HTTP
 * adapter prints an error's stack with console.error) into structured lines.
 */
export function guardProcess(log: Logger): ProcessGuard {
  let escaped = 0;
  const onEscaped = (origin: 'uncaughtException' | 'unhandledRejection') => (error: unknown) => {
    escaped++;
    log.log('error', 'an error escaped every handler; the service goes on', { origin, error: errorMessage(error), escapedErrors: escaped });
  };
  process.on('uncaughtException', onEscaped('uncaughtException'));
  process.on('unhandledRejection', onEscaped('unhandledRejection'));

  const viaLog =
    (level: LogLevel) =>
    (...args: unknown[]) => {
      const text = args
        .map((arg) => (arg instanceof Error ? errorMessage(arg) : typeof arg === 'string' ? arg : format('%o', arg)))
        .join(' ');
      log.log(level, 'console output of a library', {
        text: text.length > MAX_CONSOLE_TEXT ? `${text.slice(0, MAX_CONSOLE_TEXT)}…` : text,
      });
    };
  console.error = viaLog('error');
  console.warn = viaLog('warn');
  console.info = viaLog('info');
  console.log = viaLog('info');
  console.debug = viaLog('debug');
  console.trace = viaLog('debug');

  return { escapedErrors: () => escaped };
}

/**
 * Requests Node's HTTP parser refuses before any route sees them (headers over the limit, a
 * malformed request line, a bad chunk): answered as Node answers them, and logged as one line with
 * the parser's code only. A client that went away gets no answer, and a debug line.
 */
export function answerClientErrors(server: Server, log: Logger): void {
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex & { bytesWritten?: number }) => {
    const code = error.code ?? 'unknown';
    if (CLIENT_LEFT.has(code)) log.log('debug', 'client went away mid-request', { code });
    else log.log('warn', 'malformed HTTP request refused', { code });
    if (socket.writable && socket.bytesWritten === 0) {
      const status =
        code === 'HPE_HEADER_OVERFLOW'
          ? '431 Request Header Fields Too Large'
          : code === 'ERR_HTTP_REQUEST_TIMEOUT'
            ? '408 Request Timeout'
            : '400 Bad Request';
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`, () => socket.destroy());
      return;
    }
    socket.destroy();
  });
}
