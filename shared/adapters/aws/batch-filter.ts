// A BatchFilter as a DynamoDB query of the byProject index: the creation-time bounds as a key
// condition on gsi1sk (a range of the sort key, so only batches created in it are read at all),
// the rest as a filter expression. A filter reads at most MAX_FILTERED_READS items a call: a list
// whose filter matches few of many batches answers what it found with has_more instead of reading
// the project's whole history in one request.
import type { BatchFilter } from '../../ports.js';

/** Items a filtered list reads at most per call (each query page reads up to FILTERED_PAGE_SIZE). */
export const MAX_FILTERED_READS = 2_000;
export const FILTERED_PAGE_SIZE = 200;

/** The latest instant a 15-digit sort key can hold. */
const MAX_SORTABLE_MS = 999_999_999_999_999;
const timeKey = (ms: number) => String(Math.min(Math.max(0, Math.floor(ms)), MAX_SORTABLE_MS)).padStart(15, '0');

export interface FilteredQuery {
  /** gsi1sk BETWEEN from AND to, when the filter bounds the creation time. */
  range?: { from: string; to: string };
  filter?: { expression: string; names: Record<string, string>; values: Record<string, unknown> };
}

export function batchFilterQuery(filter: BatchFilter): FilteredQuery {
  const query: FilteredQuery = {};
  if (filter.createdAfterMs !== undefined || filter.createdBeforeMs !== undefined) {
    // Sort keys are <createdAtMs, 15 digits>#<id>: '#' sorts before every id character and '~' after.
    query.range = { from: `${timeKey(filter.createdAfterMs ?? 0)}#`, to: `${timeKey(filter.createdBeforeMs ?? MAX_SORTABLE_MS)}#~` };
  }
  const clauses: string[] = [];
  const names: Record<string, string> = {};
  const values: Record<string, unknown> = {};
  const list = (prefix: string, items: readonly string[]) =>
    items.map((item, i) => {
      values[`:${prefix}${i}`] = item;
      return `:${prefix}${i}`;
    });
  if (filter.statuses?.length) {
    names['#status'] = 'status';
    clauses.push(`#status IN (${list('status', filter.statuses).join(', ')})`);
  }
  if (filter.inputFileIds?.length) clauses.push(`inputFileId IN (${list('input', filter.inputFileIds).join(', ')})`);
  if (filter.metadataContains) {
    names['#metadata'] = 'metadata';
    names['#metadataKey'] = filter.metadataContains.key;
    values[':metadataText'] = filter.metadataContains.text;
    clauses.push('contains(#metadata.#metadataKey, :metadataText)');
  }
  if (clauses.length > 0) query.filter = { expression: clauses.join(' AND '), names, values };
  return query;
}

/** Where a descending read from the cursor's sort key starts in the range: from the cursor, the range's top, or nowhere. */
export function cursorInRange(cursorSortKey: string, range: FilteredQuery['range']): 'cursor' | 'top' | 'empty' {
  if (!range) return 'cursor';
  if (cursorSortKey > range.to) return 'top';
  if (cursorSortKey < range.from) return 'empty';
  return 'cursor';
}
