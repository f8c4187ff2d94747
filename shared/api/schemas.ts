// zod schemas of what clients send. Messages are written for the person reading the error.
import { z } from 'zod';
import { DEFAULT_FILE_RETENTION_SECONDS } from '../batch/files.js';
import { metadataSchema } from '../batch/rules.js';
import { type IdKind, isIdOf } from '../ids.js';
import { PRIORITIES, type Priority } from '../schedule/fair-queue.js';
import { quoted } from './errors.js';

const expiresAfter = z.object(
  {
    anchor: z.literal('created_at', { error: "anchor must be 'created_at'" }),
    seconds: z.coerce
      .number({ error: 'seconds must be a number' })
      .int('seconds must be a whole number')
      .min(3600, 'seconds must be at least 3600 (1 hour)')
      // The longest a file may live is the lifetime it has when nobody names one.
      .max(DEFAULT_FILE_RETENTION_SECONDS, `seconds must be at most ${DEFAULT_FILE_RETENTION_SECONDS} (30 days)`),
  },
  { error: 'must be an object with anchor and seconds' },
);

/** A body field that must hold one of our ids: any other string is refused (400) before storage is asked. */
const idField = (kind: IdKind, name: string, example: string) =>
  z
    .string({ error: `${name} is required and must be a string` })
    .min(1, `${name} must not be empty`)
    .refine((id) => isIdOf(kind, id), { error: (issue) => `'${quoted(String(issue.input))}' is not a ${kind} id (${example})` });

export const createBatchSchema = z
  .object({
    input_file_id: idField('file', 'input_file_id', 'file-…'),
    endpoint: z.string({ error: 'endpoint is required and must be a string' }),
    completion_window: z.string({ error: 'completion_window is required and must be a string such as 24h' }),
    metadata: metadataSchema.optional(),
    output_expires_after: expiresAfter.optional(),
    /** Extension: a larger or smaller share of the project's turns (README, "Fair sharing"). */
    x_priority: z.enum(PRIORITIES, { error: "x_priority must be 'high', 'normal' or 'low'" }).optional(),
    /** Extension: create it even when its estimated end is past its completion window. */
    x_run_anyway: z.boolean({ error: 'x_run_anyway must be true or false' }).optional(),
  })
  .superRefine((body, ctx) => {
    const asked = body.metadata?.x_priority;
    if (asked !== undefined && !(PRIORITIES as readonly string[]).includes(asked)) {
      ctx.addIssue({ code: 'custom', path: ['metadata', 'x_priority'], message: "metadata.x_priority must be 'high', 'normal' or 'low'" });
    }
  });

export type CreateBatchBody = z.infer<typeof createBatchSchema>;

/** Whether a create asks to run even past its window: x_run_anyway, or metadata's x_run_anyway "true". */
export const runAnyway = (body: CreateBatchBody): boolean => body.x_run_anyway ?? body.metadata?.x_run_anyway === 'true';

/** The priority a create asks for: the x_priority field, else metadata's x_priority (for SDKs that send no extra fields). */
export function requestedPriority(body: CreateBatchBody): Priority | undefined {
  return body.x_priority ?? (body.metadata?.x_priority as Priority | undefined);
}

/** A list route's `limit`: a whole number from 1 to `max`, `fallback` when absent. */
export const pageLimit = (max: number, fallback: number) =>
  z.coerce
    .number({ error: 'limit must be a number' })
    .int('limit must be a whole number')
    .min(1, 'limit must be at least 1')
    .max(max, `limit must be at most ${max}`)
    .default(fallback);

export const listBatchesQuery = z.object({
  limit: pageLimit(100, 20),
  after: z.string().min(1).optional(),
});

export const listFilesQuery = z.object({
  limit: pageLimit(10_000, 10_000),
  after: z.string().min(1).optional(),
  order: z.enum(['asc', 'desc'], { error: "order must be 'asc' or 'desc'" }).default('desc'),
  purpose: z.string().min(1).optional(),
});

export const fileExpiresAfter = expiresAfter;
