// `npm start`'s pipeline triggers: croner computes each schedule's times (EventBridge Scheduler's
// expressions, in the pipeline's time zone), and chokidar watches each drop folder
// (DATA_DIR/<source prefix>) with the operating system's file events, not by polling the tree.
// The runs themselves are the domain's (shared/pipelines/run.ts), as in AWS.
//
// After a restart: files that arrived while the service was down run (chokidar reports what is in a
// folder when it starts, and a file already run is a repeat of its trigger, so it runs once); a run
// that was importing when the service stopped is taken up again. Scheduled times that passed while
// the service was down are not run late.
import { readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { basename, join, relative, sep } from 'node:path';
import { type FSWatcher, watch } from 'chokidar';
import pLimit from 'p-limit';
import { ConfigError } from '../shared/config.js';
import { errorMessage, type Logger } from '../shared/log.js';
import { PipelineConfigError, type PipelineDefinition, parsePipelinesText } from '../shared/pipelines/config.js';
import {
  objectTrigger,
  type RunDeps,
  type RunOutcome,
  resumeRun,
  scheduledTrigger,
  startRun,
  type Trigger,
} from '../shared/pipelines/run.js';
import { parseSchedule } from '../shared/pipelines/schedule.js';

/** Runs importing at once. */
const RUN_CONCURRENCY = 4;
/** A run that failed for want of storage is tried again this many times, this long apart. */
const RETRIES = 3;
const RETRY_MS = 5_000;
/** The longest a timer waits before it looks at the clock again. */
const MAX_TIMER_MS = 3_600_000;
/** A dropped file is run once its size has not changed for this long (a copy still being written is not). */
const WRITE_SETTLE_MS = 300;

/** The PIPELINES file, checked: local sources and destinations are folders under DATA_DIR, not other buckets. */
export function loadPipelinesFile(path: string): PipelineDefinition[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError(`invalid configuration: PIPELINES: cannot read ${path} (${errorMessage(error)})`);
  }
  try {
    const pipelines = parsePipelinesText(text, `PIPELINES (${path})`, { allowSeconds: true });
    for (const p of pipelines) {
      if (p.source.bucket !== undefined || p.destination.bucket !== undefined) {
        throw new PipelineConfigError(
          `pipeline '${p.name}': s3://bucket/ locations are for AWS; npm start reads and writes folders under DATA_DIR`,
        );
      }
    }
    return pipelines;
  } catch (error) {
    if (error instanceof PipelineConfigError) throw new ConfigError(`invalid configuration: ${error.message}`);
    throw error;
  }
}

export interface LocalPipelines {
  /** Runs a pipeline now (bounded with the others); answers the run. */
  start(pipeline: PipelineDefinition, trigger: Trigger): Promise<RunOutcome>;
  /** Resumes interrupted runs, then starts the schedules and the folder watches. */
  run(): Promise<void>;
  stop(): Promise<void>;
}

export function localPipelines(options: {
  pipelines: readonly PipelineDefinition[];
  deps: RunDeps;
  dataDir: string;
  log: Logger;
}): LocalPipelines {
  const { pipelines, deps, dataDir, log } = options;
  const limit = pLimit(RUN_CONCURRENCY);
  const timers = new Set<NodeJS.Timeout>();
  const watchers: FSWatcher[] = [];
  let stopped = false;

  const later = (ms: number, fn: () => void) => {
    const timer = setTimeout(() => {
      timers.delete(timer);
      if (!stopped) fn();
    }, ms);
    timer.unref();
    timers.add(timer);
  };

  const start = (pipeline: PipelineDefinition, trigger: Trigger) => limit(() => startRun(deps, pipeline, trigger));

  /** A trigger from a schedule or a folder: nobody waits for it, so failures are logged and storage failures retried. */
  const fire = (pipeline: PipelineDefinition, trigger: Trigger, attempt = 1): void => {
    start(pipeline, trigger).then(
      ({ run, duplicate }) => {
        if (duplicate) log.log('debug', 'pipeline trigger seen before', { pipeline: pipeline.name, runId: run.id });
      },
      (error: unknown) => {
        log.log(attempt < RETRIES ? 'warn' : 'error', 'pipeline run could not start', {
          pipeline: pipeline.name,
          trigger: trigger.key,
          attempt,
          error: errorMessage(error),
        });
        if (attempt < RETRIES) later(RETRY_MS, () => fire(pipeline, trigger, attempt + 1));
      },
    );
  };

  const schedule = (pipeline: PipelineDefinition) => {
    const times = parseSchedule(pipeline.schedule!, pipeline.timeZone, { allowSeconds: true });
    const wait = (afterMs: number) => {
      const next = times.next(afterMs);
      if (next === undefined) return;
      const tick = () => {
        if (deps.clock.now() < next) later(Math.min(next - deps.clock.now(), MAX_TIMER_MS), tick);
        else {
          fire(pipeline, scheduledTrigger(next));
          wait(next);
        }
      };
      tick();
    };
    wait(deps.clock.now());
  };

  const watchFolder = async (pipeline: PipelineDefinition) => {
    const folder = join(dataDir, pipeline.source.key);
    await mkdir(folder, { recursive: true });
    const watcher = watch(folder, {
      alwaysStat: true,
      awaitWriteFinish: { stabilityThreshold: WRITE_SETTLE_MS, pollInterval: 100 },
      // Hidden files are an editor's or a copy's scratch.
      ignored: (path) => basename(path).startsWith('.'),
    });
    watchers.push(watcher);
    watcher.on('add', (path, stats) => {
      const key = relative(dataDir, path).split(sep).join('/');
      const version = `${stats?.size ?? 0}-${Math.trunc(stats?.mtimeMs ?? 0)}`;
      fire(pipeline, objectTrigger(key, version, deps.clock.now()));
    });
    watcher.on('error', (error) => log.log('warn', 'drop folder watch failed', { pipeline: pipeline.name, error: errorMessage(error) }));
    await new Promise<void>((resolve) => watcher.once('ready', () => resolve()));
  };

  return {
    start,
    async run() {
      for (const pipeline of pipelines) {
        const recent = await deps.runs.listRuns(pipeline.project, pipeline.name, { limit: 50 });
        for (const interrupted of recent.items.filter((r) => r.status === 'importing')) {
          void limit(() => resumeRun(deps, pipeline, interrupted)).then(
            (run) =>
              run &&
              log.log('info', 'pipeline run resumed after a restart', { pipeline: pipeline.name, runId: run.id, status: run.status }),
            (error: unknown) =>
              log.log('error', 'pipeline run could not be resumed', { runId: interrupted.id, error: errorMessage(error) }),
          );
        }
      }
      for (const pipeline of pipelines) {
        if (pipeline.trigger === 'schedule') schedule(pipeline);
        else await watchFolder(pipeline);
      }
      if (pipelines.length > 0) log.log('info', 'pipelines running', { pipelines: pipelines.map((p) => p.name) });
    },
    async stop() {
      stopped = true;
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      await Promise.all(watchers.map((w) => w.close()));
      // Runs under way finish their step; one cut short is resumed at the next start.
      limit.clearQueue();
    },
  };
}
