// The errors of a file that fails validation: every one counted, the first maxErrors kept.
import type { BatchLineError } from '../batch/model.js';

/** Collects a file's errors: counts all of them, keeps the first `maxErrors`. */
export class ErrorCollector {
  private readonly kept: BatchLineError[] = [];
  private found = 0;

  constructor(private readonly maxErrors: number) {}

  report(error: BatchLineError): void {
    this.found++;
    if (this.kept.length < this.maxErrors) this.kept.push(error);
  }

  /** Whether any error was reported. */
  get any(): boolean {
    return this.found > 0;
  }

  get count(): number {
    return this.found;
  }

  /**
   * Adds errors found later for lines already seen (confirmed duplicates), in line order with
   * the rest: a duplicate is its line's first problem, so it replaces whatever else that line had.
   * `newLines`: how many of them are on lines that had no error yet (the others are counted).
   */
  merge(lineErrors: readonly BatchLineError[], newLines: number): void {
    if (lineErrors.length === 0) return;
    const lines = new Set(lineErrors.map((error) => error.line));
    const others = this.kept.filter((error) => error.code === 'too_many_tasks' || error.line === null || !lines.has(error.line));
    const merged = [...others, ...lineErrors]
      .map((error, order) => ({ error, order }))
      .sort((a, b) => (a.error.line ?? Infinity) - (b.error.line ?? Infinity) || a.order - b.order)
      .slice(0, this.maxErrors)
      .map(({ error }) => error);
    this.kept.splice(0, this.kept.length, ...merged);
    this.found += newLines;
  }

  /** The errors kept (the first maxErrors), in line order. */
  get errors(): BatchLineError[] {
    return this.kept;
  }
}
