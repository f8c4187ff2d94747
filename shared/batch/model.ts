// The records the domain keeps. They are storage-shaped (flat, times in milliseconds);
// shared/api/objects.ts turns them into the OpenAI wire objects.
import type { PartSummary } from '../input/upload-check.js';
import type { Priority } from '../schedule/fair-queue.js';

export const BATCH_STATUSES = [
  'validating',
  'failed',
  'in_progress',
  'finalizing',
  'completed',
  'expired',
  'cancelling',
  'cancelled',
] as const;
export type BatchStatus = (typeof BATCH_STATUSES)[number];

export const TERMINAL_STATUSES: readonly BatchStatus[] = ['failed', 'completed', 'expired', 'cancelled'];

/** Token usage summed over the upstream responses, in the Batch object's `usage` shape (flattened). */
export interface UsageTotals {
  inputTokens: number;
  cachedTokens: number;
  outputTokens: number;
  reasoningTokens: number;
  totalTokens: number;
}

export const ZERO_USAGE: UsageTotals = {
  inputTokens: 0,
  cachedTokens: 0,
  outputTokens: 0,
  reasoningTokens: 0,
  totalTokens: 0,
};

export interface BatchLineError {
  code: string;
  message: string;
  param: string | null;
  line: number | null;
}

export type FilePurpose = 'batch' | 'batch_output' | 'assistants' | 'fine-tune' | 'vision' | 'user_data' | 'evals';

export interface FileRecord {
  id: string;
  project: string;
  filename: string;
  purpose: FilePurpose;
  bytes: number;
  createdAtMs: number;
  expiresAtMs: number | null;
  /** Where the bytes live in the BlobStore. */
  blobKey: string;
  /** Its request lines, when the upload counted them (a create checks quotas with it). */
  requests?: number;
  /** The model its first request names, when the upload read it (a create checks the route's quota by it). */
  model?: string;
}

/** One chunk of a batch: a byte range of the input file holding `requests` request lines. */
export interface ChunkPlanEntry {
  index: number;
  start: number;
  /** Exclusive. */
  end: number;
  requests: number;
}

export interface ChunkPlan {
  batchId: string;
  chunks: ChunkPlanEntry[];
}

/** What one chunk run produced: counts and usage, added to the batch exactly once. */
export interface ChunkOutcome {
  index: number;
  /** Distinguishes the result objects of one run of the chunk from another run's. */
  attempt: string;
  completed: number;
  failed: number;
  /** Lines that never ran because the batch was cancelled or expired (they count as failed too). */
  unrun: number;
  usage: UsageTotals;
}

/** The API dialect a batch was created through (shared/api/dialects); absent for OpenAI's. */
export type BatchDialect = 'zhipu' | 'dashscope' | 'melious';

export interface BatchRecord {
  id: string;
  project: string;
  endpoint: string;
  inputFileId: string;
  completionWindow: string;
  status: BatchStatus;
  model: string | null;
  metadata: Record<string, string> | null;
  /** Seconds the output and error files live after they are created; null keeps them. */
  outputExpiresAfterSeconds: number | null;
  errors: BatchLineError[] | null;
  outputFileId: string | null;
  errorFileId: string | null;

  createdAtMs: number;
  expiresAtMs: number;
  inProgressAtMs: number | null;
  finalizingAtMs: number | null;
  completedAtMs: number | null;
  failedAtMs: number | null;
  expiredAtMs: number | null;
  cancellingAtMs: number | null;
  cancelledAtMs: number | null;

  total: number;
  completed: number;
  /** Includes `unrun`. */
  failed: number;
  /** Lines recorded as never run (batch_cancelled or batch_expired) by the chunks so far. */
  unrun: number;
  usage: UsageTotals;

  /**
   * The Step Functions task token the batch's execution waits on while its chunks run (AWS only):
   * the last chunk sends task success with it, a cancel sends task failure.
   */
  taskToken?: string | null;

  /** Chunks whose outcome has been recorded, and the attempt that recorded each. */
  chunkCount: number;
  doneChunks: number[];
  chunkAttempts: Record<string, string>;

  /** The batch whose failed lines this batch runs again (POST /v1/x/batches/{id}/retry); absent otherwise. */
  retryOf?: string;
  /** The batch made from this one's failed lines, once it is retried. */
  retriedBy?: string;

  /** x_priority: a larger or smaller share of its project's turns (absent: normal). */
  priority?: Priority;
  /** Its input's estimated tokens (a token per four bytes): what it holds of its project's token quota. */
  estimatedTokens?: number;
  /** The upstream route serving its model, once validated (its per-route quota and throughput). */
  route?: string;
  /** The quota counters it takes from (shared/schedule/quota.ts), written before it takes any. */
  quotaKeys?: string[];
  /** When it took its quota and its chunks started to go on the queue; absent while it waits for quota. */
  admittedAtMs?: number;
  /** Melious's batches end with one output file holding every row (shared/batch/one-file.ts). */
  dialect?: BatchDialect;
  /** Zhipu's `auto_delete_input_file`: the input file is deleted once the batch is final. */
  autoDeleteInputFile?: boolean;
}

export type UploadStatus = 'pending' | 'completed' | 'cancelled' | 'expired';

/** An Upload (OpenAI's Uploads API): a file sent in parts, joined on complete. */
export interface UploadRecord {
  id: string;
  project: string;
  filename: string;
  purpose: FilePurpose;
  /** The size the client announced; the parts must add up to it on complete. */
  bytes: number;
  mimeType: string;
  status: UploadStatus;
  createdAtMs: number;
  /** An upload that is not completed by then expires (an hour after creation). */
  expiresAtMs: number;
  /** Seconds the resulting file lives after its creation (expires_after), or null for the default. */
  fileExpiresAfterSeconds: number | null;
  /** The File created on complete. */
  fileId: string | null;
  /**
   * While a complete joins the parts: until when its claim holds (absent when no complete holds
   * one). Another complete waits for it rather than join too; a claim past it is free to take.
   */
  completingUntilMs?: number;
  /** The bytes of the parts recorded so far (absent before the first): they may not pass `bytes`. */
  partBytes?: number;
}

export interface UploadPartRecord {
  id: string;
  uploadId: string;
  project: string;
  bytes: number;
  createdAtMs: number;
  blobKey: string;
  /** What the file checks need of the part's bytes, found as it streamed in (absent on older parts). */
  summary?: PartSummary;
}

/**
 * The secret half of a signed (`id.secret`) key, encrypted (in AWS with the stack's KMS key), by
 * the key's id: what verifies the tokens signed with it. The key's project and revocation live in
 * its ApiKeyRecord, found by the hash of the whole key.
 */
export interface SigningKeyRecord {
  id: string;
  /** Base64 ciphertext of the secret. */
  encryptedSecret: string;
  createdAtMs: number;
}

/** An API key, stored by the SHA-256 of the key: the key itself is shown once and never stored. */
export interface ApiKeyRecord {
  keyHash: string;
  project: string;
  /** The first characters of the key, to tell keys apart in listings. */
  prefix: string;
  createdAtMs: number;
  revokedAtMs: number | null;
}
