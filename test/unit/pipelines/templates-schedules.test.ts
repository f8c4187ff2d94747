// Key templates (the run's date in the pipeline's time zone), EventBridge Scheduler expressions
// computed with croner, and the configuration's checks.
import { describe, expect, it } from 'vitest';
import { PipelineConfigError, parsePipelines } from '../../../shared/pipelines/config.js';
import { parseSchedule, ScheduleError } from '../../../shared/pipelines/schedule.js';
import { expandKeyTemplate, parseKeyTemplate, TemplateError, templatePrefix } from '../../../shared/pipelines/templates.js';

const at = (iso: string) => Date.parse(iso);

describe('key templates', () => {
  it("fills in the run's date and time in the pipeline's time zone", () => {
    const template = 'inbox/reviews/{yyyy}-{MM}-{dd}.jsonl';
    // 23:30 UTC on 2 December is already 3 December in Paris.
    expect(expandKeyTemplate(template, at('2026-12-02T23:30:00Z'), 'Europe/Paris')).toBe('inbox/reviews/2026-12-03.jsonl');
    expect(expandKeyTemplate(template, at('2026-12-02T23:30:00Z'), 'UTC')).toBe('inbox/reviews/2026-12-02.jsonl');
    expect(expandKeyTemplate('in/{yyyy}/{MM}/{dd}/{HH}{mm}.jsonl', at('2027-01-05T07:04:00Z'), 'America/New_York')).toBe(
      'in/2027/01/05/0204.jsonl',
    );
    expect(expandKeyTemplate('in/fixed.jsonl', at('2027-01-05T07:04:00Z'), 'UTC')).toBe('in/fixed.jsonl');
  });

  it('refuses unknown and unclosed placeholders, and tells the prefix every key starts with', () => {
    expect(() => parseKeyTemplate('in/{yyyy}-{month}.jsonl')).toThrow(TemplateError);
    expect(() => parseKeyTemplate('in/{yyyy.jsonl')).toThrow(/not part of a placeholder/);
    expect(templatePrefix('inbox/reviews/{yyyy}-{MM}.jsonl')).toBe('inbox/reviews/');
    expect(templatePrefix('inbox/x.jsonl')).toBe('inbox/x.jsonl');
  });
});

describe('schedules', () => {
  it('cron(...) fires at its time in the time zone (Quartz weekdays, ? and year)', () => {
    const nightly = parseSchedule('cron(0 2 * * ? *)', 'Europe/Paris');
    expect(new Date(nightly.next(at('2026-12-03T00:00:00Z'))!).toISOString()).toBe('2026-12-03T01:00:00.000Z');
    // In summer Paris is UTC+2.
    expect(new Date(nightly.next(at('2026-07-01T00:30:00Z'))!).toISOString()).toBe('2026-07-02T00:00:00.000Z');
    // 2-6 is Monday to Friday in EventBridge's numbering: Saturday 5 December → Monday 7.
    const weekdays = parseSchedule('cron(0 9 ? * 2-6 *)', 'UTC');
    expect(new Date(weekdays.next(at('2026-12-05T00:00:00Z'))!).toISOString()).toBe('2026-12-07T09:00:00.000Z');
    const quarter = parseSchedule('cron(0/15 * * * ? *)', 'UTC');
    expect(new Date(quarter.next(at('2026-12-05T00:07:00Z'))!).toISOString()).toBe('2026-12-05T00:15:00.000Z');
  });

  it('rate(...) falls on whole periods, so the same times come again after a restart', () => {
    const rate = parseSchedule('rate(5 minutes)', 'UTC');
    expect(rate.next(at('2026-12-05T00:07:00Z'))).toBe(at('2026-12-05T00:10:00Z'));
    expect(rate.next(at('2026-12-05T00:10:00Z'))).toBe(at('2026-12-05T00:15:00Z'));
    expect(parseSchedule('rate(1 day)', 'UTC').next(at('2026-12-05T00:07:00Z'))).toBe(at('2026-12-06T00:00:00Z'));
    expect(() => parseSchedule('rate(5 seconds)', 'UTC')).toThrow(/npm start only/);
    expect(parseSchedule('rate(5 seconds)', 'UTC', { allowSeconds: true }).next(at('2026-12-05T00:00:01Z'))).toBe(
      at('2026-12-05T00:00:05Z'),
    );
    expect(() => parseSchedule('rate(1 minutes)', 'UTC')).toThrow(/rate\(1 minute\)/);
  });

  it('at(...) fires once, at its local time', () => {
    const once = parseSchedule('at(2027-01-01T00:00:00)', 'Europe/Paris');
    expect(once.next(at('2026-12-05T00:00:00Z'))).toBe(at('2026-12-31T23:00:00Z'));
    expect(once.next(at('2027-01-01T00:00:00Z'))).toBeUndefined();
  });

  it('refuses what EventBridge Scheduler refuses, saying why', () => {
    expect(() => parseSchedule('cron(0 2 * * *)', 'UTC')).toThrow(/six fields/);
    expect(() => parseSchedule('cron(0 2 * * 1 *)', 'UTC')).toThrow(/must be \?/);
    expect(() => parseSchedule('cron(0 25 * * ? *)', 'UTC')).toThrow(ScheduleError);
    expect(() => parseSchedule('every day', 'UTC')).toThrow(/not an EventBridge Scheduler expression/);
  });
});

const nightly = {
  name: 'nightly-reviews',
  project: 'reviews',
  schedule: 'cron(0 2 * * ? *)',
  timeZone: 'Europe/Paris',
  source: 'inbox/reviews/{yyyy}-{MM}-{dd}.jsonl',
  destination: 'outbox/reviews/nightly/',
  endpoint: '/v1/chat/completions',
  completionWindow: '24h',
  metadata: { job: 'reviews' },
};
const drop = {
  name: 'drop',
  project: 'reviews',
  trigger: 'object-created',
  source: 'inbox/reviews/drop/',
  destination: 's3://results-bucket/outbox/reviews/drop/',
  endpoint: '/v1/chat/completions',
};

describe('the pipelines configuration', () => {
  it("takes the issue's example, with defaults filled in", () => {
    const [first, second] = parsePipelines([nightly, drop]);
    expect(first).toEqual({
      ...nightly,
      trigger: 'schedule',
      source: { bucket: undefined, key: nightly.source },
      destination: { bucket: undefined, key: nightly.destination },
    });
    expect(second).toMatchObject({
      trigger: 'object-created',
      schedule: undefined,
      timeZone: 'UTC',
      completionWindow: '24h',
      metadata: null,
      destination: { bucket: 'results-bucket', key: 'outbox/reviews/drop/' },
    });
  });

  it('names every problem with its pipeline and field', () => {
    const bad = [
      { ...nightly, timeZone: 'Mars/Olympus', schedule: 'cron(0 2 * * *)' },
      { ...nightly, name: 'y', endpoint: '/v1/nope' },
      { ...drop, source: 'inbox/reviews/drop.jsonl', destination: 'inbox/reviews/drop/out/' },
      { ...nightly, name: 'x', source: 'files/a.jsonl', metadata: { pipeline_run: 'mine' } },
    ];
    let message = '';
    try {
      parsePipelines(bad);
    } catch (error) {
      expect(error).toBeInstanceOf(PipelineConfigError);
      message = (error as Error).message;
    }
    for (const expected of [
      "pipeline 'nightly-reviews' timeZone: 'Mars/Olympus' is not an IANA time zone",
      "pipeline 'nightly-reviews' schedule: cron(0 2 * * *): cron(...) takes six fields",
      "pipeline 'y' endpoint: must be one of",
      "pipeline 'drop' source: of an object-created pipeline must be a prefix",
      "pipeline 'x' source: must not be under the service's own",
      "pipeline 'x' metadata: must not set pipeline",
    ]) {
      expect(message).toContain(expected);
    }
    expect(() => parsePipelines([nightly, nightly])).toThrow(/appears twice/);
    expect(() => parsePipelines([{ ...drop, destination: 'inbox/reviews/drop/results/' }])).toThrow(/must not overlap the source/);
    expect(() => parsePipelines({})).toThrow(/JSON array/);
  });
});
