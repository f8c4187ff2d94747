// zod schemas of what clients send. Messages are written for the person reading the error.
import { z } from 'zod';

export const BATCH_ENDPOINTS = [
  '/v1/responses',
  '/v1/chat/completions',
  '/v1/embeddings',
  '/v1/completions',
  '/v1/moderations',
  '/v1/images/generations',
  '/v1/images/edits',
  '/v1/videos',
] as const;

const expiresAfter = z.object(
  {
    anchor: z.literal('created_at', { error: "anchor must be 'created_at'" }),
    seconds: z.coerce
      .number({ error: 'seconds must be a number' })
      .int('seconds must be a whole number')
      .min(3600, 'seconds must be at least 3600 (1 hour)')
      .max(2_592_000, 'seconds must be at most 2592000 (30 days)'),
  },
  { error: 'must be an object with anchor and seconds' },
);

export const metadataSchema = z
  .record(
    z.string().max(64, 'metadata keys must be at most 64 characters'),
    z.string({ error: 'metadata values must be strings' }).max(512, 'metadata values must be at most 512 characters'),
  )
  .refine((value) => Object.keys(value).length <= 16, 'metadata can have at most 16 keys')
  .nullable();

export const createBatchSchema = z.object({
  input_file_id: z.string({ error: 'input_file_id is required and must be a string' }).min(1, 'input_file_id must not be empty'),
  endpoint: z.string({ error: 'endpoint is required and must be a string' }),
  completion_window: z.string({ error: 'completion_window is required and must be a string such as 24h' }),
  metadata: metadataSchema.optional(),
  output_expires_after: expiresAfter.optional(),
});

export type CreateBatchBody = z.infer<typeof createBatchSchema>;

const limit = (max: number, fallback: number) =>
  z.coerce
    .number({ error: 'limit must be a number' })
    .int('limit must be a whole number')
    .min(1, 'limit must be at least 1')
    .max(max, `limit must be at most ${max}`)
    .default(fallback);

export const listBatchesQuery = z.object({
  limit: limit(100, 20),
  after: z.string().min(1).optional(),
});

export const listFilesQuery = z.object({
  limit: limit(10_000, 10_000),
  after: z.string().min(1).optional(),
  order: z.enum(['asc', 'desc'], { error: "order must be 'asc' or 'desc'" }).default('desc'),
  purpose: z.string().min(1).optional(),
});

export const fileExpiresAfter = expiresAfter;
