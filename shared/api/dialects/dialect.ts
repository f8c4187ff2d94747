// A dialect is how one provider's clients speak the Batch API: its base paths, the names and
// shapes of its Batch object, what its create and list requests add to OpenAI's. It maps at the
// HTTP edge and never forks the lifecycle: every dialect reaches the same domain, with the same
// tenancy, limits and bad-input rules. OpenAI's is the default; the others are beside this file.
import type { CreateBatchRequest } from '../../batch/create.js';
import type { BatchDialect, BatchRecord } from '../../batch/model.js';
import type { BatchFilter } from '../../ports.js';
import { toBatchObject } from '../objects.js';
import { DASHSCOPE_ENDPOINTS, dashScopeListFilter } from './dashscope.js';

/** Why a request is refused 401. */
export type AuthErrorCode = 'missing_api_key' | 'invalid_api_key' | 'invalid_token' | 'token_expired';

/** A Batch object on the wire: OpenAI's fields, renamed or reshaped by a dialect. */
export type WireBatch = { id: string } & Record<string, unknown>;

export interface Dialect {
  readonly name: 'openai' | BatchDialect;
  /** Where its clients' base URL points (the path part), e.g. `/v1`. */
  readonly basePaths: readonly string[];
  /** The endpoints a batch may name, beside the line urls' /v4 aliases. */
  readonly endpoints: readonly string[];
  /** The Batch object as this dialect's clients read it. */
  batchObject(batch: BatchRecord): WireBatch;
  /** What this dialect's create body adds to OpenAI's (checked: throws an ApiError for a bad field). */
  createOptions(body: Record<string, unknown>): Pick<CreateBatchRequest, 'dialect' | 'autoDeleteInputFile'>;
  /** Its list query's filters, checked; undefined when it names none. */
  listFilter(query: Record<string, string>): BatchFilter | undefined;
  /** The `code` of a 401 as the provider documents it; unset: OpenAI's. */
  authErrorCode?(code: AuthErrorCode): string;
}

/** OpenAI's, with DashScope's dry run and list filters, which conflict with nothing of OpenAI's. */
export const openAiDialect: Dialect = {
  name: 'openai',
  basePaths: ['/v1'],
  endpoints: DASHSCOPE_ENDPOINTS,
  batchObject: toBatchObject,
  createOptions: () => ({}),
  listFilter: dashScopeListFilter,
};
