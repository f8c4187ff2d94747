// Exit codes scripts can branch on, and every error turned into one line for a person to read.
import { CommanderError } from 'commander';
import OpenAI from 'openai';
import type { Batch } from 'openai/resources/batches';

export const ExitCode = {
  /** The command did what was asked; for a wait, the batch ended `completed`. */
  ok: 0,
  /** The service answered with an error (its envelope's message and code are shown), or something unexpected. */
  apiError: 1,
  /** Bad arguments, or a local file that cannot be read or is not what the command expects. */
  usage: 2,
  /** The service could not be reached (refused, unknown host, timed out). */
  connection: 3,
  failed: 4,
  expired: 5,
  cancelled: 6,
  /** Ctrl-C while waiting: the batch goes on. */
  interrupted: 130,
} as const;

/** What `--help` and the README say about exit codes. */
export const EXIT_CODES_HELP = `Exit codes:
  0    done; for submit --wait, wait and cancel --wait: the batch ended completed
  1    the service answered an error (its message and code are printed), or the
       batch is not in a state for the command (download before it ended)
  2    usage: bad arguments, or a local file that cannot be read or converted
  3    connection: the service could not be reached
  4    the batch ended failed (its input did not validate)
  5    the batch ended expired
  6    the batch ended cancelled
  130  interrupted while waiting (the batch goes on)`;

export const TERMINAL_STATUSES: ReadonlySet<Batch['status']> = new Set(['completed', 'failed', 'expired', 'cancelled']);

export function exitCodeOfStatus(status: Batch['status']): number {
  switch (status) {
    case 'failed':
      return ExitCode.failed;
    case 'expired':
      return ExitCode.expired;
    case 'cancelled':
      return ExitCode.cancelled;
    default:
      return ExitCode.ok;
  }
}

/** A mistake of the person running the command: shown as is, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

const LOCAL_FILE_CODES: Record<string, string> = {
  ENOENT: 'no such file or directory',
  EACCES: 'permission denied',
  EISDIR: 'is a directory',
  ENOTDIR: 'not a directory',
};

/** The first `code` along an error's cause chain (fetch wraps ECONNREFUSED two levels deep). */
function causeCode(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; current && depth < 5; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/** The message at the end of an error's cause chain (fetch's own is only "fetch failed"). */
function deepestMessage(error: unknown): string | undefined {
  let message: string | undefined;
  let current: unknown = error;
  for (let depth = 0; current instanceof Error && depth < 5; depth++) {
    message = current.message;
    current = current.cause;
  }
  return message;
}

export interface Failure {
  code: number;
  line: string;
}

/** One line and an exit code for any error; never a stack trace, never a key. */
export function describeFailure(error: unknown, baseURL: string): Failure {
  if (error instanceof UsageError) return { code: ExitCode.usage, line: `error: ${error.message}` };
  if (error instanceof CommanderError) return { code: error.exitCode === 0 ? ExitCode.ok : ExitCode.usage, line: '' };
  if (error instanceof OpenAI.APIConnectionTimeoutError) {
    return { code: ExitCode.connection, line: `error: ${baseURL} did not answer in time` };
  }
  if (error instanceof OpenAI.APIConnectionError) {
    const reason = causeCode(error.cause) ?? deepestMessage(error.cause);
    return { code: ExitCode.connection, line: `error: cannot reach ${baseURL}${reason ? ` (${reason})` : ''}` };
  }
  if (error instanceof OpenAI.APIError) {
    const envelope = (error.error ?? {}) as { message?: unknown; code?: unknown };
    const message = typeof envelope.message === 'string' ? envelope.message : error.message;
    const details = [typeof envelope.code === 'string' ? envelope.code : undefined, error.status ? `HTTP ${error.status}` : undefined];
    const suffix = details.filter(Boolean).join(', ');
    return { code: ExitCode.apiError, line: `error: ${message}${suffix ? ` (${suffix})` : ''}` };
  }
  const fsCode = causeCode(error);
  const path = (error as { path?: unknown }).path;
  if (fsCode && LOCAL_FILE_CODES[fsCode] && typeof path === 'string') {
    return { code: ExitCode.usage, line: `error: cannot open ${path}: ${LOCAL_FILE_CODES[fsCode]}` };
  }
  return { code: ExitCode.apiError, line: `error: ${error instanceof Error ? error.message : String(error)}` };
}
