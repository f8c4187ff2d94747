// A pipeline run: one trigger (a scheduled time, a new object, a request by hand) of one pipeline.
// Its id depends only on the pipeline and the trigger, so a trigger delivered twice names the same
// run, and the run's conditional creation (PipelineRunStore.createRun) lets only one of them act.
//
//   importing ──source checked, file and batch created──> submitted ──results written──> delivered
//       │                                                     └──writes failed every try──> delivery_failed
//       └──the source is missing or is no batch file──> failed
import { derivedId } from '../ids.js';

export const RUN_STATUSES = ['importing', 'submitted', 'failed', 'delivered', 'delivery_failed'] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];
export type RunTrigger = 'schedule' | 'object-created' | 'manual';

export interface RunError {
  code: string;
  message: string;
}

export interface PipelineRunRecord {
  /** `run_` and 24 letters or digits, derived from the project, the pipeline and `runKey`. */
  id: string;
  project: string;
  pipeline: string;
  trigger: RunTrigger;
  /** What makes the trigger itself: the scheduled time, the object and its version, a request's key. */
  runKey: string;
  /** The run's time: the scheduled time, the object's arrival, the request's. */
  runAtMs: number;
  /** The object read (a key in the service's bucket, or s3://bucket/key). */
  source: string;
  /** Where the results go: `<pipeline destination><run id>/`. */
  destination: string;
  status: RunStatus;
  batchId: string | null;
  inputFileId: string | null;
  error: RunError | null;
  /** An importing run is being worked on until then; after it, a repeat of the trigger takes it over. */
  claimUntilMs: number;
  deliveryAttempts: number;
  createdAtMs: number;
  updatedAtMs: number;
}

export const FINAL_RUN_STATUSES: readonly RunStatus[] = ['failed', 'delivered', 'delivery_failed'];

export function runId(project: string, pipeline: string, runKey: string): string {
  return derivedId('run_', `pipeline-run:${project}:${pipeline}:${runKey}`);
}

/** The run's batch and input file: derived, so a run taken over after a crash makes the same ones. */
export const runBatchId = (id: string) => derivedId('batch_', `pipeline-batch:${id}`);
export const runInputFileId = (id: string) => derivedId('file-', `pipeline-input:${id}`);

export const RUN_ID_SHAPE = /^run_[A-Za-z0-9]{24}$/;
