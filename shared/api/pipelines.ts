// Pipelines at the API (extension routes, shared/api/extensions.ts's convention): a project sees its
// own pipelines, their last runs, and can start a run by hand. Another project's pipeline answers 404
// exactly like one that does not exist.
//
//   GET  /v1/x/pipelines                       the project's pipelines, each with its next run and last run
//   GET  /v1/x/pipelines/{name}                one of them
//   GET  /v1/x/pipelines/{name}/runs           its runs, newest first (limit, after)
//   GET  /v1/x/pipelines/{name}/runs/{run_id}  one run
//   POST /v1/x/pipelines/{name}/runs           a run now (body: {"key": ...} for a drop pipeline's object;
//                                              an Idempotency-Key header makes a repeat answer the same run)
import type { Context, Hono } from 'hono';
import { z } from 'zod';
import { randomToken } from '../ids.js';
import { formatLocation, type PipelineDefinition } from '../pipelines/config.js';
import { type PipelineRunRecord, RUN_ID_SHAPE } from '../pipelines/model.js';
import { manualTrigger, type RunOutcome, type Trigger, TriggerRefused } from '../pipelines/run.js';
import { parseSchedule } from '../pipelines/schedule.js';
import type { Clock, PipelineRunStore } from '../ports.js';
import { ApiError, badRequest, quoted } from './errors.js';
import { listObject } from './objects.js';
import { jsonBodyLimit, parse } from './request.js';
import { pageLimit } from './schemas.js';

type Env = { Variables: { project: string; requestId: string } };

export interface PipelineApiDeps {
  clock: Pick<Clock, 'now'>;
  pipelines: {
    definitions: readonly PipelineDefinition[];
    runs: PipelineRunStore;
    /** Starts a run (npm start runs it in-process; in AWS the pipeline-run function does). */
    start(pipeline: PipelineDefinition, trigger: Trigger): Promise<RunOutcome>;
  };
}

const seconds = (ms: number) => Math.floor(ms / 1000);

export function toRunObject(run: PipelineRunRecord) {
  return {
    id: run.id,
    object: 'pipeline.run' as const,
    pipeline: run.pipeline,
    trigger: run.trigger,
    status: run.status,
    run_at: seconds(run.runAtMs),
    source: run.source,
    destination: run.destination,
    batch_id: run.batchId,
    input_file_id: run.inputFileId,
    error: run.error,
    delivery_attempts: run.deliveryAttempts,
    created_at: seconds(run.createdAtMs),
    updated_at: seconds(run.updatedAtMs),
  };
}

function nextRunAt(pipeline: PipelineDefinition, nowMs: number): number | null {
  if (pipeline.schedule === undefined) return null;
  const next = parseSchedule(pipeline.schedule, pipeline.timeZone, { allowSeconds: true }).next(nowMs);
  return next === undefined ? null : seconds(next);
}

const runsQuery = z.object({ limit: pageLimit(100, 20), after: z.string().min(1).optional() });
const runBody = z.object({ key: z.string({ error: "key must be the object's key, a string" }).min(1).max(1024).optional() }).strict();
const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

const pipelineNotFound = (name: string) =>
  new ApiError(404, `No pipeline found with name '${quoted(name)}'.`, 'invalid_request_error', null, 'not_found');

export function registerPipelineRoutes(api: Hono<Env>, deps: PipelineApiDeps): void {
  const { pipelines, clock } = deps;

  function pipelineOf(c: Context<Env>): PipelineDefinition {
    const name = c.req.param('name')!;
    const pipeline = pipelines.definitions.find((p) => p.name === name && p.project === c.get('project'));
    if (!pipeline) throw pipelineNotFound(name);
    return pipeline;
  }

  async function pipelineObject(pipeline: PipelineDefinition) {
    const last = (await pipelines.runs.listRuns(pipeline.project, pipeline.name, { limit: 1 })).items[0];
    return {
      name: pipeline.name,
      object: 'pipeline' as const,
      trigger: pipeline.trigger,
      schedule: pipeline.schedule ?? null,
      time_zone: pipeline.timeZone,
      source: formatLocation(pipeline.source),
      destination: formatLocation(pipeline.destination),
      endpoint: pipeline.endpoint,
      completion_window: pipeline.completionWindow,
      metadata: pipeline.metadata,
      next_run_at: nextRunAt(pipeline, clock.now()),
      last_run: last ? toRunObject(last) : null,
    };
  }

  api.get('/x/pipelines', async (c) => {
    const own = pipelines.definitions.filter((p) => p.project === c.get('project'));
    const data = await Promise.all(own.map(pipelineObject));
    return c.json({ object: 'list', data, first_id: data[0]?.name ?? null, last_id: data.at(-1)?.name ?? null, has_more: false });
  });

  api.get('/x/pipelines/:name', async (c) => c.json(await pipelineObject(pipelineOf(c))));

  api.get('/x/pipelines/:name/runs', async (c) => {
    const pipeline = pipelineOf(c);
    const query = parse(runsQuery, c.req.query());
    if (query.after !== undefined && !RUN_ID_SHAPE.test(query.after)) return c.json(listObject([], false));
    const page = await pipelines.runs.listRuns(pipeline.project, pipeline.name, query);
    return c.json(listObject(page.items.map(toRunObject), page.hasMore));
  });

  api.get('/x/pipelines/:name/runs/:run_id', async (c) => {
    const pipeline = pipelineOf(c);
    const id = c.req.param('run_id')!;
    const run = RUN_ID_SHAPE.test(id) ? await pipelines.runs.getRun(id) : undefined;
    if (!run || run.project !== pipeline.project || run.pipeline !== pipeline.name) {
      throw new ApiError(404, `No pipeline run found with id '${quoted(id)}'.`, 'invalid_request_error', null, 'not_found');
    }
    return c.json(toRunObject(run));
  });

  api.post('/x/pipelines/:name/runs', jsonBodyLimit(64 * 1024), async (c) => {
    const pipeline = pipelineOf(c);
    const text = await c.req.text();
    let value: unknown = {};
    if (text.trim()) {
      try {
        value = JSON.parse(text);
      } catch {
        throw badRequest('The request body is not valid JSON.', null, 'invalid_json');
      }
    }
    const body = parse(runBody, value);
    const idempotencyKey = c.req.header('idempotency-key');
    if (idempotencyKey !== undefined && !IDEMPOTENCY_KEY.test(idempotencyKey)) {
      throw badRequest('The Idempotency-Key header must be 1..255 printable ASCII characters.', 'Idempotency-Key');
    }
    const trigger = manualTrigger(clock.now(), idempotencyKey ?? randomToken(24), body.key);
    try {
      const { run, duplicate } = await pipelines.start(pipeline, trigger);
      return c.json(toRunObject(run), duplicate ? 200 : 201);
    } catch (error) {
      if (error instanceof TriggerRefused) throw badRequest(error.message, 'key');
      throw error;
    }
  });
}
