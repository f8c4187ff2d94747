// Progress on stderr (stdout stays for what scripts read): a live bar on a terminal, and one plain
// line per change anywhere else (CI logs, pipes), so a log shows each step once.
import bytes from 'bytes';
import { Presets, SingleBar } from 'cli-progress';
import ms from 'ms';
import type { Batch } from 'openai/resources/batches';

export type Output = NodeJS.WritableStream & { isTTY?: boolean };

/** Requests per second over the last RATE_WINDOW_MS of samples. */
const RATE_WINDOW_MS = 30_000;

export class RateMeter {
  private samples: { at: number; done: number }[] = [];

  sample(at: number, done: number): void {
    this.samples.push({ at, done });
    while (this.samples.length > 2 && at - this.samples[1]!.at >= RATE_WINDOW_MS) this.samples.shift();
  }

  /** Requests per second, or undefined until two samples lie apart in time. */
  perSecond(): number | undefined {
    const first = this.samples[0];
    const last = this.samples.at(-1);
    if (!first || !last || last.at <= first.at) return undefined;
    return ((last.done - first.done) * 1000) / (last.at - first.at);
  }
}

export interface BatchView {
  status: Batch['status'];
  done: number;
  total: number;
  failed: number;
  /** Requests per second, formatted; '' while unknown. */
  rate: string;
  /** Time left at the current rate, formatted; '' while unknown. */
  eta: string;
}

export function viewOf(batch: Batch, meter: RateMeter, now: number): BatchView {
  const counts = batch.request_counts ?? { total: 0, completed: 0, failed: 0 };
  const done = counts.completed + counts.failed;
  // The rate counts from the first sight of the batch running, not from its validation.
  const running = batch.status === 'in_progress' && counts.total > 0;
  if (running) meter.sample(now, done);
  const perSecond = meter.perSecond();
  const remaining = counts.total - done;
  return {
    status: batch.status,
    done,
    total: counts.total,
    failed: counts.failed,
    rate: running && perSecond !== undefined ? perSecond.toFixed(1) : '',
    eta: running && perSecond ? ms(Math.max(1000, Math.round((remaining / perSecond) * 1000))) : '',
  };
}

export function plainLine(id: string, view: BatchView): string {
  if (view.total === 0) return `${id} ${view.status}`;
  const parts = [`${view.done}/${view.total} done`, `${view.failed} failed`];
  if (view.rate) parts.push(`${view.rate} req/s`);
  if (view.eta) parts.push(`ETA ${view.eta}`);
  return `${id} ${view.status}: ${parts.join(', ')}`;
}

export interface BatchProgress {
  update(batch: Batch): void;
  stop(): void;
}

export function batchProgress(out: Output = process.stderr, clock: () => number = Date.now): BatchProgress {
  const meter = new RateMeter();
  if (!out.isTTY) {
    let last = '';
    return {
      update(batch) {
        const view = viewOf(batch, meter, clock());
        // A change is a new status or new counts; the rate and ETA alone move every poll.
        const key = `${view.status} ${view.done} ${view.total} ${view.failed}`;
        if (key === last) return;
        last = key;
        out.write(`${plainLine(batch.id, view)}\n`);
      },
      stop() {},
    };
  }
  const bar = new SingleBar(
    {
      stream: out,
      // cli-progress fills {eta} and {value} itself; the rate and ETA shown are this meter's.
      format: '{id} {status} [{bar}] {done}/{totalText} done | {failed} failed | {rateText} req/s | ETA {etaText}',
      hideCursor: true,
      emptyOnZero: true,
      barsize: 30,
    },
    Presets.shades_classic,
  );
  let started = false;
  return {
    update(batch) {
      const view = viewOf(batch, meter, clock());
      const payload = {
        id: batch.id,
        status: view.status,
        done: view.done,
        totalText: view.total || '?',
        failed: view.failed,
        rateText: view.rate || '-',
        etaText: view.eta || '-',
      };
      if (!started) {
        bar.start(view.total, view.done, payload);
        started = true;
        return;
      }
      if (bar.getTotal() !== view.total) bar.setTotal(view.total);
      bar.update(view.done, payload);
    },
    stop() {
      if (started) bar.stop();
    },
  };
}

export interface UploadProgress {
  /** A part of `size` bytes is stored. */
  partDone(size: number): void;
  stop(): void;
}

export function uploadProgress(name: string, totalBytes: number, parts: number, out: Output = process.stderr): UploadProgress {
  let sentBytes = 0;
  let sentParts = 0;
  if (!out.isTTY) {
    return {
      partDone(size) {
        sentBytes += size;
        sentParts += 1;
        out.write(`uploading ${name}: ${sentParts}/${parts} parts, ${bytes.format(sentBytes)} of ${bytes.format(totalBytes)}\n`);
      },
      stop() {},
    };
  }
  const bar = new SingleBar(
    {
      stream: out,
      format: 'uploading {name} [{bar}] {percentage}% | {sent} of {size} | {parts}',
      hideCursor: true,
      barsize: 30,
    },
    Presets.shades_classic,
  );
  const payload = () => ({ name, sent: bytes.format(sentBytes), size: bytes.format(totalBytes), parts: `${sentParts}/${parts} parts` });
  bar.start(totalBytes, 0, payload());
  return {
    partDone(size) {
      sentBytes += size;
      sentParts += 1;
      bar.update(sentBytes, payload());
    },
    stop() {
      bar.stop();
    },
  };
}
