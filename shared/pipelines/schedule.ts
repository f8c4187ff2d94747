// EventBridge Scheduler's schedule expressions, computed with croner for `npm start` (in AWS the
// Scheduler itself fires them): `cron(minutes hours day-of-month month day-of-week year)` with
// Quartz's weekday numbers (1 = Sunday) and `?`, `rate(N unit)`, and one-time `at(yyyy-mm-ddThh:mm:ss)`,
// each in the pipeline's time zone.
//
// A rate has no anchor of its own here (EventBridge starts one when the schedule is created), so runs
// fall on whole multiples of the period since the epoch: after a restart the same times come again,
// and a run's time names the same run (its idempotency key).
import { Cron } from 'croner';

export class ScheduleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ScheduleError';
  }
}

export interface Schedule {
  expression: string;
  /** The first time the schedule fires strictly after `afterMs`, or undefined when it never does again. */
  next(afterMs: number): number | undefined;
}

const RATE = /^rate\((\d+) (second|seconds|minute|minutes|hour|hours|day|days)\)$/;
const CRON = /^cron\((.+)\)$/;
const AT = /^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$/;
const UNIT_MS = { second: 1_000, minute: 60_000, hour: 3_600_000, day: 86_400_000 } as const;

export interface ScheduleOptions {
  /** `rate(N seconds)`: `npm start` takes it (EventBridge Scheduler's smallest rate is a minute). */
  allowSeconds?: boolean;
}

export function parseSchedule(expression: string, timeZone: string, options: ScheduleOptions = {}): Schedule {
  const rate = RATE.exec(expression);
  if (rate) {
    const count = Number(rate[1]);
    const unit = rate[2]!.replace(/s$/, '') as keyof typeof UNIT_MS;
    if (count < 1) throw new ScheduleError(`${expression}: the rate must be 1 or more`);
    if ((count === 1) !== !rate[2]!.endsWith('s')) throw new ScheduleError(`${expression}: write rate(1 ${unit}) or rate(N ${unit}s)`);
    if (unit === 'second' && !options.allowSeconds) {
      throw new ScheduleError(`${expression}: EventBridge Scheduler's smallest rate is rate(1 minute) (seconds are for npm start only)`);
    }
    const periodMs = count * UNIT_MS[unit];
    return { expression, next: (afterMs) => (Math.floor(afterMs / periodMs) + 1) * periodMs };
  }
  const cron = CRON.exec(expression);
  if (cron) {
    const fields = cron[1]!.trim().split(/\s+/);
    if (fields.length !== 6) {
      throw new ScheduleError(`${expression}: cron(...) takes six fields: minutes hours day-of-month month day-of-week year`);
    }
    if (fields[2] !== '?' && fields[4] !== '?') {
      throw new ScheduleError(`${expression}: one of day-of-month and day-of-week must be ? (as EventBridge requires)`);
    }
    let job: Cron;
    try {
      job = new Cron(`0 ${fields.join(' ')}`, {
        timezone: timeZone,
        paused: true,
        mode: '7-part',
        alternativeWeekdays: true,
        sloppyRanges: true,
      });
    } catch (error) {
      throw new ScheduleError(`${expression}: ${(error as Error).message.replace(/^CronPattern: /, '')}`);
    }
    return { expression, next: (afterMs) => job.nextRun(new Date(afterMs))?.getTime() };
  }
  const at = AT.exec(expression);
  if (at) {
    const job = new Cron(at[1]!, { timezone: timeZone, paused: true });
    const onceMs = job.getOnce()?.getTime();
    if (onceMs === undefined || Number.isNaN(onceMs)) throw new ScheduleError(`${expression}: not a date and time`);
    return { expression, next: (afterMs) => (onceMs > afterMs ? onceMs : undefined) };
  }
  throw new ScheduleError(
    `'${expression}' is not an EventBridge Scheduler expression: rate(5 minutes), cron(0 2 * * ? *) or at(2027-01-01T00:00:00)`,
  );
}
