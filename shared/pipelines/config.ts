// A pipeline's definition: where its input comes from, what starts a run, and where the results go.
// One shape for both runtimes: the stack's `context.batchService.pipelines` and the file that
// `npm start` is given as PIPELINES. Checked with zod, so a typo stops start-up (or synth) with a
// message that names the pipeline and the field.
import { z } from 'zod';
import { BATCH_ENDPOINTS, metadataSchema, parseCompletionWindow } from '../batch/rules.js';
import { parseSchedule, ScheduleError, type ScheduleOptions } from './schedule.js';
import { parseKeyTemplate, TemplateError } from './templates.js';

/** Where an object lives: the service's bucket (locally DATA_DIR) when `bucket` is undefined. */
export interface Location {
  bucket: string | undefined;
  key: string;
}

export interface PipelineDefinition {
  /** Unique among the pipelines; part of run ids, resource names and metadata. */
  name: string;
  project: string;
  trigger: 'schedule' | 'object-created';
  /** `rate(...)`, `cron(...)` or `at(...)` (EventBridge Scheduler's expressions); only for trigger `schedule`. */
  schedule: string | undefined;
  /** IANA time zone of the schedule and of the source's date placeholders. */
  timeZone: string;
  /** A key or key template (schedule), or a prefix ending in `/` (object-created). */
  source: Location;
  /** A prefix ending in `/`: each run writes `<destination><run id>/…`. */
  destination: Location;
  endpoint: string;
  completionWindow: string;
  metadata: Record<string, string> | null;
}

/** Metadata keys every pipeline batch carries (so the pipeline's own metadata has three fewer). */
export const RUN_METADATA = { pipeline: 'pipeline', run: 'pipeline_run', runAt: 'pipeline_run_at' } as const;
const MAX_OWN_METADATA_KEYS = 16 - Object.keys(RUN_METADATA).length;

/** Key prefixes that are the service's own (shared/batch/keys.ts; locally the data directory's stores). */
export const RESERVED_PREFIXES = ['files/', 'uploads/', 'batches/', 'blobs/', 'meta/'] as const;

export class PipelineConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PipelineConfigError';
  }
}

const S3_URL = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])\/(.*)$/;

/** `s3://bucket/key` names another bucket; a plain key is in the service's bucket. */
export function parseLocation(text: string): Location {
  const match = S3_URL.exec(text);
  return match ? { bucket: match[1]!, key: match[2]! } : { bucket: undefined, key: text };
}

export function formatLocation(location: Location): string {
  return location.bucket === undefined ? location.key : `s3://${location.bucket}/${location.key}`;
}

// A key the way both stores take it: segments of letters, digits and `_-.{}`, no `.` or `..` segment.
const KEY = /^[A-Za-z0-9_\-.{}]+(\/[A-Za-z0-9_\-.{}]+)*\/?$/;

function keyProblem(key: string): string | undefined {
  if (!KEY.test(key) || key.split('/').some((part) => part === '.' || part === '..')) {
    return 'must be a key of letters, digits and _ - . separated by /';
  }
  if (RESERVED_PREFIXES.some((prefix) => key.startsWith(prefix)))
    return `must not be under the service's own ${RESERVED_PREFIXES.join(', ')}`;
  return undefined;
}

const locationText = z.string({ error: 'must be a key or s3://bucket/key' }).min(1).max(1024);

const pipelineSchema = (options: ScheduleOptions) =>
  z
    .object({
      name: z.string().regex(/^[A-Za-z0-9_-]{1,48}$/, 'must be 1..48 letters, digits, - or _'),
      project: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'must be 1..64 letters, digits, _ . or -'),
      trigger: z.enum(['schedule', 'object-created'], { error: "must be 'schedule' or 'object-created'" }).default('schedule'),
      schedule: z.string().optional(),
      timeZone: z.string().default('UTC'),
      source: locationText,
      destination: locationText,
      endpoint: z.enum(BATCH_ENDPOINTS, { error: `must be one of ${BATCH_ENDPOINTS.join(', ')}` }),
      completionWindow: z
        .string()
        .refine((w) => parseCompletionWindow(w) !== undefined, 'must be written like 24h')
        .default('24h'),
      metadata: metadataSchema
        .refine((m) => m === null || Object.keys(m).length <= MAX_OWN_METADATA_KEYS, `may have at most ${MAX_OWN_METADATA_KEYS} keys`)
        .refine(
          (m) => m === null || !Object.values(RUN_METADATA).some((key) => key in m),
          'must not set pipeline, pipeline_run or pipeline_run_at',
        )
        .optional(),
    })
    .strict()
    .superRefine((p, ctx) => {
      const problem = (path: string, message: string) => ctx.addIssue({ code: 'custom', path: [path], message });
      try {
        new Intl.DateTimeFormat('en', { timeZone: p.timeZone });
      } catch {
        problem('timeZone', `'${p.timeZone}' is not an IANA time zone such as Europe/Paris`);
      }
      const source = parseLocation(p.source);
      const destination = parseLocation(p.destination);
      const sourceProblem = keyProblem(source.key);
      if (sourceProblem) problem('source', sourceProblem);
      const destinationProblem = keyProblem(destination.key);
      if (destinationProblem) problem('destination', destinationProblem);
      if (!destination.key.endsWith('/') || destination.key.includes('{'))
        problem('destination', 'must be a prefix ending in / (no placeholders)');
      if (p.trigger === 'schedule') {
        if (p.schedule === undefined) problem('schedule', 'is required for a scheduled pipeline: rate(...), cron(...) or at(...)');
        else {
          try {
            parseSchedule(p.schedule, p.timeZone, options);
          } catch (error) {
            if (!(error instanceof ScheduleError)) throw error;
            problem('schedule', error.message);
          }
        }
        if (source.key.endsWith('/')) problem('source', 'of a scheduled pipeline must be a key or key template, not a prefix');
        try {
          parseKeyTemplate(source.key);
        } catch (error) {
          if (!(error instanceof TemplateError)) throw error;
          problem('source', error.message);
        }
      } else {
        if (p.schedule !== undefined) problem('schedule', 'is only for trigger schedule');
        if (!source.key.endsWith('/') || source.key.includes('{'))
          problem('source', 'of an object-created pipeline must be a prefix ending in / (no placeholders)');
      }
      if (
        source.bucket === destination.bucket &&
        (destination.key.startsWith(source.key.split('{')[0]!) || source.key.startsWith(destination.key))
      ) {
        // A run's results landing where its inputs are watched would start runs of their own.
        problem('destination', 'must not overlap the source');
      }
    });

export type PipelineInput = z.input<ReturnType<typeof pipelineSchema>>;

/** Parses and checks a list of pipelines; throws a PipelineConfigError naming every problem. */
export function parsePipelines(value: unknown, where = 'pipelines', options: ScheduleOptions = {}): PipelineDefinition[] {
  const parsed = z.array(pipelineSchema(options), { error: 'must be a JSON array of pipelines' }).max(100).safeParse(value);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      const [index, ...field] = issue.path;
      const name = typeof index === 'number' ? ((value as { name?: unknown }[])[index]?.name ?? `#${index}`) : undefined;
      return `${name === undefined ? where : `pipeline '${String(name)}'`}${field.length ? ` ${field.join('.')}` : ''}: ${issue.message}`;
    });
    throw new PipelineConfigError(`invalid ${where}: ${problems.join('; ')}`);
  }
  const names = new Set<string>();
  const pipelines = parsed.data.map((p): PipelineDefinition => {
    if (names.has(p.name)) throw new PipelineConfigError(`invalid ${where}: pipeline '${p.name}' appears twice`);
    names.add(p.name);
    return {
      name: p.name,
      project: p.project,
      trigger: p.trigger,
      schedule: p.schedule,
      timeZone: p.timeZone,
      source: parseLocation(p.source),
      destination: parseLocation(p.destination),
      endpoint: p.endpoint,
      completionWindow: p.completionWindow,
      metadata: p.metadata ?? null,
    };
  });
  return pipelines;
}

/** The JSON text of a pipelines file (PIPELINES), parsed and checked. */
export function parsePipelinesText(text: string, where: string, options: ScheduleOptions = {}): PipelineDefinition[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new PipelineConfigError(`invalid ${where}: not JSON (${(error as Error).message})`);
  }
  return parsePipelines(value, where, options);
}

/** A definition back in the configuration's shape (what the stack hands the pipeline-run function). */
export function pipelineInput(p: PipelineDefinition): PipelineInput {
  return {
    name: p.name,
    project: p.project,
    trigger: p.trigger,
    ...(p.schedule === undefined ? {} : { schedule: p.schedule }),
    timeZone: p.timeZone,
    source: formatLocation(p.source),
    destination: formatLocation(p.destination),
    endpoint: p.endpoint as PipelineInput['endpoint'],
    completionWindow: p.completionWindow,
    ...(p.metadata ? { metadata: { ...p.metadata } } : {}),
  };
}
