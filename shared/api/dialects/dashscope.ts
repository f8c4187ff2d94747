// DashScope (seed qwen-dashscope-batch-api.txt), at /compatible-mode/v1 (its SDK's base URL):
// OpenAI's shapes, plus the dry run (`batch-test-model` on the endpoint /v1/chat/ds-test, answered
// in-process with DashScope's test limits: shared/upstream/test-model.ts), the list filters
// (ds_name, input_file_ids, status, create_after / create_before: a MetaStore BatchFilter, never a
// page filtered after the fact), and the limits of the metadata keys ds_name and ds_description.
// The dry run and the list filters conflict with nothing of OpenAI's, so /v1 has them too.
import { z } from 'zod';
import { BATCH_STATUSES, type BatchStatus } from '../../batch/model.js';
import { BATCH_ENDPOINTS, metadataSchema } from '../../batch/rules.js';
import type { BatchFilter } from '../../ports.js';
import { DRY_RUN_ENDPOINT } from '../../upstream/test-model.js';
import { quoted } from '../errors.js';
import { toBatchObject } from '../objects.js';
import { parse } from '../request.js';
import type { Dialect } from './dialect.js';

export const DASHSCOPE_ENDPOINTS: readonly string[] = [...BATCH_ENDPOINTS, DRY_RUN_ENDPOINT];

const MAX_NAME = 100;
const MAX_DESCRIPTION = 200;
const MAX_INPUT_FILE_IDS = 20;

const dashScopeMetadata = z.object({
  metadata: metadataSchema
    .optional()
    .refine((metadata) => (metadata?.ds_name?.length ?? 0) <= MAX_NAME, {
      error: `metadata.ds_name must be at most ${MAX_NAME} characters`,
      path: ['ds_name'],
    })
    .refine((metadata) => (metadata?.ds_description?.length ?? 0) <= MAX_DESCRIPTION, {
      error: `metadata.ds_description must be at most ${MAX_DESCRIPTION} characters`,
      path: ['ds_description'],
    }),
});

/** yyyyMMddHHmmss (UTC) as milliseconds, or undefined when it is no real instant in that form. */
export function parseDashScopeTime(text: string): number | undefined {
  const match = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})$/.exec(text);
  if (!match) return undefined;
  const [year, month, day, hour, minute, second] = match.slice(1).map(Number) as [number, number, number, number, number, number];
  const ms = Date.UTC(year, month - 1, day, hour, minute, second);
  const back = new Date(ms);
  // Date.UTC rolls 20260231 over to March: only a date that reads back the same is one.
  const same =
    back.getUTCFullYear() === year &&
    back.getUTCMonth() === month - 1 &&
    back.getUTCDate() === day &&
    back.getUTCHours() === hour &&
    back.getUTCMinutes() === minute &&
    back.getUTCSeconds() === second;
  return same ? ms : undefined;
}

const commaList = (text: string) =>
  text
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean);

const time = (name: string) =>
  z
    .string()
    .transform((text, ctx) => {
      const ms = parseDashScopeTime(text);
      if (ms === undefined) {
        ctx.addIssue({
          code: 'custom',
          message: `${name} must be a time written yyyyMMddHHmmss (UTC), such as 20260301000000, not '${quoted(text)}'`,
        });
        return z.NEVER;
      }
      return ms;
    })
    .optional();

const listFilters = z.object({
  ds_name: z.string().min(1, 'ds_name must not be empty').max(MAX_NAME, `ds_name must be at most ${MAX_NAME} characters`).optional(),
  input_file_ids: z
    .string()
    .transform((text, ctx) => {
      const ids = commaList(text);
      if (ids.length === 0 || ids.length > MAX_INPUT_FILE_IDS) {
        ctx.addIssue({ code: 'custom', message: `input_file_ids must name 1 to ${MAX_INPUT_FILE_IDS} file ids, separated by commas` });
        return z.NEVER;
      }
      return ids;
    })
    .optional(),
  status: z
    .string()
    .transform((text, ctx) => {
      const statuses = commaList(text);
      const unknown = statuses.find((status) => !(BATCH_STATUSES as readonly string[]).includes(status));
      if (statuses.length === 0 || unknown !== undefined) {
        ctx.addIssue({
          code: 'custom',
          message: `status must be statuses separated by commas, each one of ${BATCH_STATUSES.join(', ')}${unknown === undefined ? '' : `, not '${quoted(unknown)}'`}`,
        });
        return z.NEVER;
      }
      return [...new Set(statuses)] as BatchStatus[];
    })
    .optional(),
  create_after: time('create_after'),
  create_before: time('create_before'),
});

/** DashScope's list filters as a BatchFilter; undefined when the query names none. */
export function dashScopeListFilter(query: Record<string, string>): BatchFilter | undefined {
  const q = parse(listFilters, query);
  const filter: BatchFilter = {
    ...(q.create_after === undefined ? {} : { createdAfterMs: q.create_after }),
    // Bounds are whole seconds, as created_at shows them: a batch of 12:00:00.500 is created at or before 12:00:00.
    ...(q.create_before === undefined ? {} : { createdBeforeMs: q.create_before + 999 }),
    ...(q.status ? { statuses: q.status } : {}),
    ...(q.input_file_ids ? { inputFileIds: q.input_file_ids } : {}),
    ...(q.ds_name === undefined ? {} : { metadataContains: { key: 'ds_name', text: q.ds_name } }),
  };
  return Object.keys(filter).length > 0 ? filter : undefined;
}

export const dashScopeDialect: Dialect = {
  name: 'dashscope',
  basePaths: ['/compatible-mode/v1'],
  endpoints: DASHSCOPE_ENDPOINTS,
  batchObject: toBatchObject,
  createOptions: (body) => {
    parse(dashScopeMetadata, body);
    return { dialect: 'dashscope' };
  },
  listFilter: dashScopeListFilter,
};
