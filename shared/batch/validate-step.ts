// Step "Validate": reads the whole input file once, as a stream; ends the batch `failed` with every
// bad line, or plans its chunks and starts it.
import { cutToBytes, QUOTE_BYTES } from '../input/request-line.js';
import { normalizeEndpoint, validateBatchInput } from '../input/validate.js';
import { moreErrorsNotice } from '../input/validation-errors.js';
import { BatchStatusConflict } from '../ports.js';
import { estimatedTokensOf, NO_QUOTAS, quotaCounters, tooLargeForQuota } from '../schedule/quota.js';
import { withoutFlavor } from '../upstream/flavor.js';
import { DRY_RUN_ENDPOINT, DRY_RUN_LIMITS, TEST_MODEL } from '../upstream/test-model.js';
import { batchFileRecord, derivedFileId } from './files.js';
import { releaseInputFile } from './input-file.js';
import { blobKeys } from './keys.js';
import { type BatchLineError, type BatchRecord, type BatchStatus, TERMINAL_STATUSES } from './model.js';
import { type StepDeps, type StoredPlan, writePlan } from './steps.js';
import { transition } from './transitions.js';

/**
 * Why validation fails a batch: the errors its record holds and, when the file has more, every
 * error validation kept (written to the batch's error file) and how many it found.
 */
interface ValidationFailure {
  errors: BatchLineError[];
  total?: number;
  reportedErrors?: BatchLineError[];
  errorCount?: number;
  errorCountIsExact?: boolean;
}

export async function validateStep(deps: StepDeps, batchId: string): Promise<BatchStatus | undefined> {
  const batch = await deps.meta.getBatch(batchId);
  if (batch?.status !== 'validating') {
    if (batch && TERMINAL_STATUSES.includes(batch.status)) await releaseInputFile(deps, batch);
    return batch?.status;
  }

  // Still readable if the user deleted it after creating the batch: the batch's pin keeps it.
  const file = await deps.meta.getInputFile(batch.project, batch.inputFileId);
  if (!file) {
    const message = `The input file ${batch.inputFileId} no longer exists.`;
    return failWith(deps, batch, { errors: [{ code: 'input_file_not_found', message, param: 'input_file_id', line: null }] });
  }
  // DashScope's dry run: a small file, batch-test-model only, nothing sent upstream.
  const dryRun = normalizeEndpoint(batch.endpoint) === DRY_RUN_ENDPOINT;
  if (dryRun && file.bytes > DRY_RUN_LIMITS.maxBytes) {
    const message = `A dry run's input file may have at most ${DRY_RUN_LIMITS.maxBytes} bytes; ${file.id} has ${file.bytes}.`;
    return failWith(deps, batch, { errors: [{ code: 'file_too_large', message, param: 'input_file_id', line: null }] });
  }
  const result = await validateBatchInput(await deps.blobs.get(file.blobKey), {
    endpoint: batch.endpoint,
    maxRequests: dryRun ? Math.min(DRY_RUN_LIMITS.maxRequests, deps.limits.maxRequestsPerBatch) : deps.limits.maxRequestsPerBatch,
    maxLineBytes: deps.limits.maxLineBytes,
    maxErrors: deps.limits.maxErrors ?? 1_000,
    chunkMaxRequests: deps.chunking.maxRequests,
    chunkMaxBytes: deps.chunking.maxBytes,
    // Only when custom_id hashes repeat: the suspected duplicates are confirmed by reading again.
    reread: () => deps.blobs.get(file.blobKey),
  });
  if (!result.ok) return failWith(deps, batch, result);
  if (dryRun && withoutFlavor(result.model) !== TEST_MODEL) {
    const model = cutToBytes(result.model, QUOTE_BYTES);
    const message = `The dry-run endpoint ${DRY_RUN_ENDPOINT} serves only ${TEST_MODEL}, not ${model}.`;
    return failWith(deps, batch, { errors: [{ code: 'model_not_found', message, param: 'body.model', line: null }], total: result.total });
  }
  if (!deps.upstreams.route(result.model)) {
    const model = cutToBytes(result.model, QUOTE_BYTES);
    const message = `No upstream is configured for the model ${model}. Set UPSTREAM_BASE_URL, or use batch-test-model for a dry run.`;
    return failWith(deps, batch, { errors: [{ code: 'model_not_found', message, param: 'body.model', line: null }], total: result.total });
  }

  // The quotas it takes from once admitted; one it can never fit ends it here (its route is known now).
  const route = deps.upstreams.routeOf?.(result.model);
  const estimatedTokens = estimatedTokensOf(file.bytes);
  const counters = deps.quotas ? quotaCounters(deps.quotaConfig ?? NO_QUOTAS, batch.project, route) : [];
  const tooLarge = tooLargeForQuota(counters, { requests: result.total, tokens: estimatedTokens });
  if (tooLarge) {
    return failWith(deps, batch, { errors: [{ code: 'quota_exceeded', message: tooLarge, param: null, line: null }], total: result.total });
  }

  const plan: StoredPlan = { batchId, inputBlobKey: file.blobKey, chunks: result.chunks };
  await writePlan(deps.blobs, plan);
  try {
    const started = await transition(deps, batch, 'in_progress', {
      model: result.model,
      total: result.total,
      chunkCount: result.chunks.length,
      estimatedTokens,
      ...(route !== undefined ? { route } : {}),
      // With no quota to take, it is admitted at once: no write more than before.
      ...(counters.length > 0 ? { quotaKeys: counters.map((counter) => counter.key) } : { admittedAtMs: deps.clock.now() }),
    });
    deps.log.log('info', 'batch validated', { batchId, requests: result.total, chunks: result.chunks.length });
    return started.status;
  } catch (error) {
    // Cancelled while it was being read: the cancel moves it on from here.
    if (error instanceof BatchStatusConflict) return error.current?.status;
    throw error;
  }
}

/**
 * Ends a validating batch `failed`. Errors the record cannot hold go to an error file (one
 * BatchError object a line), and the record's list ends with a notice of how many there are.
 */
async function failWith(deps: StepDeps, batch: BatchRecord, failure: ValidationFailure): Promise<BatchStatus | undefined> {
  const { errors, total = 0 } = failure;
  const reported = failure.reportedErrors ?? errors;
  const found = { count: failure.errorCount ?? errors.length, exact: failure.errorCountIsExact ?? true };
  const errorFile = reported.length > errors.length ? await writeErrorFile(deps, batch, reported) : undefined;
  const listed =
    found.count > errors.length
      ? [...errors, moreErrorsNotice(errors.length, found, errorFile && { id: errorFile.id, errors: reported.length })]
      : errors;
  try {
    const failed = await transition(deps, batch, 'failed', { errors: listed, errorFileId: errorFile?.id ?? null, total });
    await releaseInputFile(deps, failed);
    return failed.status;
  } catch (error) {
    if (!(error instanceof BatchStatusConflict)) throw error;
    // The batch left validating another way (a cancel): its error file serves nobody.
    if (errorFile && error.current?.errorFileId !== errorFile.id) {
      await deps.meta.deleteFile(batch.project, errorFile.id);
      await deps.blobs.delete([errorFile.blobKey]);
    }
    return error.current?.status;
  }
}

/** Every error validation kept, one BatchError object a line. The id depends only on the batch: a step that runs again writes the same file. */
async function writeErrorFile(deps: StepDeps, batch: BatchRecord, reported: BatchLineError[]) {
  const blobKey = blobKeys.file(derivedFileId(batch.id, 'error'));
  const { bytes } = await deps.blobs.put(blobKey, reported.map((error) => `${JSON.stringify(error)}\n`).join(''));
  const file = batchFileRecord(batch, 'error', bytes, deps.clock.now());
  await deps.meta.putFile(file);
  return file;
}
