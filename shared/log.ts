// Structured JSON logs, one object a line (CloudWatch and `npm start` alike). Callers pass ids and
// counts, never request bodies or keys.
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface Logger {
  log(level: LogLevel, message: string, fields?: Record<string, unknown>): void;
}

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export function jsonLogger(minimum: LogLevel = 'info', write: (line: string) => void = (line) => process.stdout.write(line)): Logger {
  return {
    log(level, message, fields) {
      if (ORDER[level] < ORDER[minimum]) return;
      write(`${JSON.stringify({ time: new Date().toISOString(), level, message, ...fields })}\n`);
    },
  };
}

export const silentLogger: Logger = { log() {} };

/** The message of an error, for logs: no stack, nothing else that could carry data. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}
