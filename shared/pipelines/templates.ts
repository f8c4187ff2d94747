// Key templates: a source key with the run's date in it, such as
// `inbox/reviews/{yyyy}-{MM}-{dd}.jsonl`, filled in with the run's time in the pipeline's time zone
// (a nightly run at 02:00 Europe/Paris reads that day's file, whatever UTC says).

export const PLACEHOLDERS = ['yyyy', 'MM', 'dd', 'HH', 'mm'] as const;
type Placeholder = (typeof PLACEHOLDERS)[number];

export class TemplateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TemplateError';
  }
}

const BRACES = /\{([^{}]*)\}/g;

/** The template's placeholders, checked: throws a TemplateError for an unknown or unclosed one. */
export function parseKeyTemplate(template: string): Placeholder[] {
  const found: Placeholder[] = [];
  for (const match of template.matchAll(BRACES)) {
    const name = match[1]!;
    if (!(PLACEHOLDERS as readonly string[]).includes(name)) {
      throw new TemplateError(`has an unknown placeholder {${name}}; the placeholders are ${PLACEHOLDERS.map((p) => `{${p}}`).join(' ')}`);
    }
    found.push(name as Placeholder);
  }
  if (/[{}]/.test(template.replace(BRACES, ''))) throw new TemplateError('has a { or } that is not part of a placeholder');
  return found;
}

/** The part of a template before its first placeholder: every key it can make starts with it. */
export function templatePrefix(template: string): string {
  const brace = template.indexOf('{');
  return brace < 0 ? template : template.slice(0, brace);
}

/** The calendar fields of an instant in a time zone. */
export function zonedParts(atMs: number, timeZone: string): Record<Placeholder, string> {
  const parts = new Intl.DateTimeFormat('en-GB', {
    timeZone,
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
    hourCycle: 'h23',
  }).formatToParts(new Date(atMs));
  const part = (type: Intl.DateTimeFormatPartTypes) => parts.find((p) => p.type === type)?.value ?? '';
  return { yyyy: part('year').padStart(4, '0'), MM: part('month'), dd: part('day'), HH: part('hour'), mm: part('minute') };
}

/** The key for a run at `atMs`. */
export function expandKeyTemplate(template: string, atMs: number, timeZone: string): string {
  parseKeyTemplate(template);
  const values = zonedParts(atMs, timeZone);
  return template.replace(BRACES, (_, name: Placeholder) => values[name]);
}
