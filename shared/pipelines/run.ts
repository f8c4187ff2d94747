// One run of a pipeline, whatever triggered it (EventBridge Scheduler or S3's object-created event in
// AWS; croner and a watched folder with `npm start`; a request by hand): claim the run, import the
// source object as a batch input file of the project through the checks an upload gets, and create
// the batch with the pipeline's endpoint, window and metadata.
//
// Exactly once per trigger: the run's id is derived from the trigger, and only the trigger that
// creates the run record (a conditional write) goes on; a repeat answers the run that exists. A run
// whose importer died (its claim lapsed) is taken over by the next repeat, and makes the same file
// and batch (their ids derive from the run's), so a run is neither lost nor doubled.

import { createBatch } from '../batch/create.js';
import { fileRecord } from '../batch/files.js';
import { blobKeys } from '../batch/keys.js';
import type { BatchRecord } from '../batch/model.js';
import { parseCompletionWindow } from '../batch/rules.js';
import { BatchFileCheck } from '../input/upload-check.js';
import { errorMessage, type Logger } from '../log.js';
import { BlobNotFoundError, type BlobStore, type Clock, type Lifecycle, type MetaStore, type PipelineRunStore } from '../ports.js';
import { formatLocation, type Location, type PipelineDefinition, RUN_METADATA } from './config.js';
import { writeFailureSummary } from './destinations.js';
import { type PipelineRunRecord, type RunError, type RunTrigger, runBatchId, runId, runInputFileId } from './model.js';
import { expandKeyTemplate } from './templates.js';

/** The keys both stores take as they are (S3 takes more; the filesystem store takes these). */
const OBJECT_KEY = /^[A-Za-z0-9_\-.]+(\/[A-Za-z0-9_\-.]+)*$/;

/** How long an import may take before a repeat of its trigger takes the run over. */
export const DEFAULT_CLAIM_MS = 15 * 60_000;

export interface RunDeps {
  meta: MetaStore;
  /** The service's own store: the imported input file goes there, as an upload's does. */
  blobs: BlobStore;
  runs: PipelineRunStore;
  clock: Pick<Clock, 'now'>;
  lifecycle: Pick<Lifecycle, 'start'>;
  log: Logger;
  /** The store of a pipeline's sources and destinations: the service's bucket (undefined) or another one. */
  objects(bucket: string | undefined): BlobStore;
  limits: {
    maxFileBytes: number;
    maxLineBytes: number;
    maxRequestsPerBatch: number;
    minCompletionWindowMs: number;
    maxCompletionWindowMs: number;
  };
  onTransition?: (batch: BatchRecord) => void;
  claimMs?: number;
}

export interface Trigger {
  kind: RunTrigger;
  /** Names the trigger: the same trigger delivered again has the same key. */
  key: string;
  atMs: number;
  /** The object an object-created trigger (or a request by hand) names. */
  objectKey?: string;
}

export function scheduledTrigger(atMs: number): Trigger {
  return { kind: 'schedule', key: `schedule:${new Date(atMs).toISOString()}`, atMs };
}

/** `version`: what tells two objects at one key apart (S3's ETag; locally size and modification time). */
export function objectTrigger(objectKey: string, version: string, atMs: number): Trigger {
  return { kind: 'object-created', key: `object:${objectKey}:${version}`, atMs, objectKey };
}

/** A run asked for by hand: a new run each time, unless the request names its own idempotency key. */
export function manualTrigger(atMs: number, requestKey: string, objectKey?: string): Trigger {
  return { kind: 'manual', key: `manual:${requestKey}`, atMs, ...(objectKey === undefined ? {} : { objectKey }) };
}

/** A run that cannot go on: its source, or its pipeline for this service, is wrong. Recorded on the run. */
export class RunFailure extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'RunFailure';
  }
}

/** A trigger that names no object of this pipeline (an event routed to the wrong pipeline, a bad key asked for by hand). */
export class TriggerRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TriggerRefused';
  }
}

export interface RunOutcome {
  run: PipelineRunRecord;
  /** The trigger had been seen: nothing was done. */
  duplicate: boolean;
}

/** Where the run reads: the template filled in with the run's time, or the object the trigger names. */
export function runSource(pipeline: PipelineDefinition, trigger: Trigger): Location {
  if (pipeline.trigger === 'object-created') {
    const key = trigger.objectKey;
    if (key === undefined) throw new TriggerRefused(`pipeline ${pipeline.name} runs on new objects: name the object's key`);
    if (!key.startsWith(pipeline.source.key) || key.length === pipeline.source.key.length || key.endsWith('/')) {
      throw new TriggerRefused(`'${key}' is not an object under ${formatLocation(pipeline.source)}`);
    }
    return { bucket: pipeline.source.bucket, key };
  }
  if (trigger.objectKey !== undefined) throw new TriggerRefused(`pipeline ${pipeline.name} reads its own source; a run of it names no key`);
  return { bucket: pipeline.source.bucket, key: expandKeyTemplate(pipeline.source.key, trigger.atMs, pipeline.timeZone) };
}

export async function startRun(deps: RunDeps, pipeline: PipelineDefinition, trigger: Trigger): Promise<RunOutcome> {
  const source = runSource(pipeline, trigger);
  const id = runId(pipeline.project, pipeline.name, trigger.key);
  const now = deps.clock.now();
  const claimMs = deps.claimMs ?? DEFAULT_CLAIM_MS;
  const fresh: PipelineRunRecord = {
    id,
    project: pipeline.project,
    pipeline: pipeline.name,
    trigger: trigger.kind,
    runKey: trigger.key,
    runAtMs: trigger.atMs,
    source: formatLocation(source),
    destination: formatLocation({ bucket: pipeline.destination.bucket, key: `${pipeline.destination.key}${id}/` }),
    status: 'importing',
    batchId: null,
    inputFileId: null,
    error: null,
    claimUntilMs: now + claimMs,
    deliveryAttempts: 0,
    createdAtMs: now,
    updatedAtMs: now,
  };
  const created = await deps.runs.createRun(fresh);
  let run = created.run;
  if (!created.created) {
    const taken = run.status === 'importing' ? await deps.runs.takeOverRun(id, now, now + claimMs) : undefined;
    if (!taken) return { run, duplicate: true };
    deps.log.log('info', 'pipeline run taken over', { pipeline: pipeline.name, runId: id });
    run = taken;
  }
  return { run: await importAndSubmit(deps, pipeline, run, source), duplicate: false };
}

/**
 * Takes up a run that was importing when the process stopped (`npm start` after a restart: no other
 * importer can be alive). The compare-and-set is on the claim as read, so two resumes cannot both go on.
 */
export async function resumeRun(
  deps: RunDeps,
  pipeline: PipelineDefinition,
  run: PipelineRunRecord,
): Promise<PipelineRunRecord | undefined> {
  if (run.status !== 'importing') return undefined;
  const now = deps.clock.now();
  const taken = await deps.runs.takeOverRun(run.id, run.claimUntilMs, now + (deps.claimMs ?? DEFAULT_CLAIM_MS));
  if (!taken) return undefined;
  const trigger: Trigger = { kind: run.trigger, key: run.runKey, atMs: run.runAtMs };
  const source =
    pipeline.trigger === 'object-created' ? { bucket: pipeline.source.bucket, key: sourceKeyOf(run) } : runSource(pipeline, trigger);
  return importAndSubmit(deps, pipeline, taken, source);
}

/** The key of the object a run reads, from its record (`s3://bucket/key` or a key). */
function sourceKeyOf(run: PipelineRunRecord): string {
  return run.source.replace(/^s3:\/\/[^/]+\//, '');
}

async function importAndSubmit(
  deps: RunDeps,
  pipeline: PipelineDefinition,
  run: PipelineRunRecord,
  source: Location,
): Promise<PipelineRunRecord> {
  try {
    const batch = await submit(deps, pipeline, run, source);
    const submitted = await deps.runs.updateRun(run.id, ['importing'], {
      status: 'submitted',
      batchId: batch.id,
      inputFileId: batch.inputFileId,
      updatedAtMs: deps.clock.now(),
    });
    deps.log.log('info', 'pipeline run submitted a batch', {
      pipeline: pipeline.name,
      runId: run.id,
      batchId: batch.id,
      source: run.source,
    });
    return submitted ?? (await deps.runs.getRun(run.id)) ?? run;
  } catch (error) {
    if (!(error instanceof RunFailure)) {
      // Storage failing: the run stays importing, and its claim is given back so that the next
      // delivery of the trigger (a retry) takes it over at once.
      await deps.runs.updateRun(run.id, ['importing'], { claimUntilMs: 0 }).catch(() => undefined);
      throw error;
    }
    const reason: RunError = { code: error.code, message: error.message };
    deps.log.log('error', 'pipeline run failed', {
      pipeline: pipeline.name,
      runId: run.id,
      source: run.source,
      code: reason.code,
      error: reason.message,
    });
    const failed = await deps.runs.updateRun(run.id, ['importing'], { status: 'failed', error: reason, updatedAtMs: deps.clock.now() });
    const final = failed ?? (await deps.runs.getRun(run.id)) ?? run;
    await writeFailureSummary(deps, final).catch((summaryError: unknown) =>
      deps.log.log('warn', 'could not write the failed run summary', { runId: run.id, error: errorMessage(summaryError) }),
    );
    return final;
  }
}

async function submit(deps: RunDeps, pipeline: PipelineDefinition, run: PipelineRunRecord, source: Location): Promise<BatchRecord> {
  const batchId = runBatchId(run.id);
  // A run taken over after its batch was created goes on from there; a batch still validating may
  // never have been started (starting it again is harmless: Step Functions names the execution for it).
  const existing = await deps.meta.getBatch(batchId);
  if (existing) {
    if (existing.status === 'validating') await deps.lifecycle.start(existing.id);
    return existing;
  }
  const windowMs = parseCompletionWindow(pipeline.completionWindow)!;
  if (windowMs < deps.limits.minCompletionWindowMs || windowMs > deps.limits.maxCompletionWindowMs) {
    throw new RunFailure(
      'invalid_completion_window',
      `The pipeline's completionWindow ${pipeline.completionWindow} is outside this service's MIN_COMPLETION_WINDOW..MAX_COMPLETION_WINDOW.`,
    );
  }
  const fileId = runInputFileId(run.id);
  const file = (await deps.meta.getFile(pipeline.project, fileId)) ?? (await importSource(deps, pipeline.project, fileId, source));
  const runAt = new Date(run.runAtMs).toISOString();
  return createBatch(deps, {
    id: batchId,
    project: pipeline.project,
    inputFileId: file.id,
    endpoint: pipeline.endpoint,
    completionWindow: pipeline.completionWindow,
    windowMs,
    metadata: { ...pipeline.metadata, [RUN_METADATA.pipeline]: pipeline.name, [RUN_METADATA.run]: run.id, [RUN_METADATA.runAt]: runAt },
    outputExpiresAfterSeconds: null,
    // Nobody waits at a scheduled or dropped run to choose: it runs, and a window it cannot meet
    // ends it expired with what it finished, rather than failing the run at create.
    runAnyway: true,
  });
}

/**
 * Copies the source object into the project's files, checking it as an upload is checked while it
 * streams (JSONL, line lengths, request count, size): a file that fails is not stored at all.
 */
async function importSource(deps: RunDeps, project: string, fileId: string, source: Location) {
  const objects = deps.objects(source.bucket);
  const where = formatLocation(source);
  if (!OBJECT_KEY.test(source.key) || source.key.split('/').some((part) => part === '.' || part === '..')) {
    throw new RunFailure(
      'invalid_source_key',
      `The source key ${where} has characters other than letters, digits and _ - . between its slashes.`,
    );
  }
  const size = await objects.size(source.key);
  if (size === undefined) throw new RunFailure('source_not_found', `The source object ${where} does not exist.`);
  const { maxFileBytes, maxLineBytes, maxRequestsPerBatch } = deps.limits;
  if (size > maxFileBytes) {
    throw new RunFailure(
      'file_too_large',
      `The source object ${where} has ${size} bytes; a batch input file has at most ${maxFileBytes} (MAX_FILE_BYTES).`,
    );
  }
  if (size === 0) throw new RunFailure('empty_file', `The source object ${where} is empty.`);
  const check = new BatchFileCheck({ maxLineBytes, maxRequests: maxRequestsPerBatch });
  const blobKey = blobKeys.file(fileId);
  async function* checked(body: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
    let bytes = 0;
    for await (const chunk of body) {
      bytes += chunk.length;
      if (bytes > maxFileBytes)
        throw new RunFailure(
          'file_too_large',
          `The source object ${where} grew past ${maxFileBytes} bytes (MAX_FILE_BYTES) while it was read.`,
        );
      const problem = check.push(chunk);
      if (problem) throw new RunFailure(problem.code, `The source object ${where} is refused: ${problem.message}`);
      yield chunk;
    }
    const problem = check.end();
    if (problem) throw new RunFailure(problem.code, `The source object ${where} is refused: ${problem.message}`);
  }
  let stored: { bytes: number };
  try {
    stored = await deps.blobs.put(blobKey, checked(await objects.get(source.key)));
  } catch (error) {
    await deps.blobs.delete([blobKey]).catch(() => undefined);
    if (error instanceof BlobNotFoundError) throw new RunFailure('source_not_found', `The source object ${where} does not exist.`);
    throw error;
  }
  const filename = source.key.slice(source.key.lastIndexOf('/') + 1);
  const file = fileRecord(
    {
      id: fileId,
      project,
      filename,
      purpose: 'batch',
      bytes: stored.bytes,
      expiresAfterSeconds: null,
      requests: check.requestCount,
      ...(check.firstModel !== undefined ? { model: check.firstModel } : {}),
    },
    deps.clock.now(),
  );
  await deps.meta.putFile(file);
  return file;
}
