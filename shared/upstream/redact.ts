// Upstream API keys never leave the service: an upstream that echoes the Authorization header in
// its answer (a JSON error, an HTML error page from a gateway) would otherwise put the key in the
// user's error file, and an error message could carry it into a log. One redactor is built from
// every configured upstream key (the default route and every route) and applied to answer text
// before it is parsed or stored, to error messages, and to log lines.
import type { Logger } from '../log.js';

export const REDACTED = '[redacted]';

export interface Redactor {
  /** `text` with every configured key replaced by [redacted]; the same string when none occurs. */
  redact(text: string): string;
  /** Whether any key is configured at all. */
  readonly active: boolean;
}

export const noRedaction: Redactor = { redact: (text) => text, active: false };

/**
 * A redactor of these keys (empty and missing ones are ignored), as written and as they appear
 * inside a JSON string. Longer keys first, so a key that contains another goes whole.
 */
export function keyRedactor(keys: Iterable<string | undefined>): Redactor {
  const given = [...keys].filter((key): key is string => typeof key === 'string' && key.length > 0);
  const secrets = [...new Set(given.flatMap((key) => [key, JSON.stringify(key).slice(1, -1)]))].sort((a, b) => b.length - a.length);
  if (secrets.length === 0) return noRedaction;
  return {
    active: true,
    redact(text) {
      let out = text;
      // includes() first: a native scan, so text without a key (nearly all of it) is not copied.
      for (const secret of secrets) if (out.includes(secret)) out = out.split(secret).join(REDACTED);
      return out;
    },
  };
}

/** A Logger that redacts the keys from the message and from every field before `log` sees them. */
export function redactingLogger(log: Logger, redactor: Redactor): Logger {
  if (!redactor.active) return log;
  return {
    log(level, message, fields) {
      let safeFields = fields;
      if (fields) {
        const text = JSON.stringify(fields);
        const redacted = redactor.redact(text);
        if (redacted !== text) safeFields = JSON.parse(redacted) as Record<string, unknown>;
      }
      log.log(level, redactor.redact(message), safeFields);
    },
  };
}
