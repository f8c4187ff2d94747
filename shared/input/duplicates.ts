// Duplicate custom_ids, told exactly. The validation pass keeps custom_ids as 64-bit hashes
// (custom-id-hash.ts); a hash seen before makes the line a suspect. After the pass, the suspects
// are confirmed by re-reading the file and comparing the real custom_ids, so a hash collision never
// reports a false duplicate.
import type { BatchLineError } from '../batch/model.js';
import { type CustomIdHasher, HashSet64, hashOut } from './custom-id-hash.js';
import { type FastLine, type FastLineExpectations, scanRequestLine } from './fast-line.js';
import { JsonlLineSplitter, type RawLineHandler } from './jsonl.js';
import { fileErrors, inspectRequestLine, isBlankRange } from './request-line.js';

/** Lines suspected of a duplicate custom_id, with the hash that made them suspect, in line order. */
export class SuspectList {
  /** Per suspect: its line, the two halves of its hash, and 1 when the line had another error. */
  private items = new Uint32Array(4 * 64);
  length = 0;

  push(line: number, h1: number, h2: number): void {
    if (this.length * 4 === this.items.length) {
      const bigger = new Uint32Array(this.items.length * 2);
      bigger.set(this.items);
      this.items = bigger;
    }
    const at = this.length * 4;
    this.items[at] = line;
    this.items[at + 1] = h1;
    this.items[at + 2] = h2;
    this.items[at + 3] = 0;
    this.length++;
  }

  /** Notes that line `line` has an error of its own, if it is the last suspect. */
  noteError(line: number): void {
    if (this.length > 0 && this.line(this.length - 1) === line) this.items[(this.length - 1) * 4 + 3] = 1;
  }

  line(index: number): number {
    return this.items[index * 4]!;
  }
  h1(index: number): number {
    return this.items[index * 4 + 1]!;
  }
  h2(index: number): number {
    return this.items[index * 4 + 2]!;
  }
  hadError(index: number): boolean {
    return this.items[index * 4 + 3] === 1;
  }
}

/** How many suspected duplicates one re-read confirms (it holds their custom_ids in a Map). */
const SUSPECTS_PER_REREAD = 20_000;

export interface DuplicateCheck {
  /** The batch's endpoint, normalized. */
  endpoint: string;
  expect: FastLineExpectations;
  hasher: CustomIdHasher;
  maxRequests: number;
  maxLineBytes: number;
  maxErrors: number;
  /** Streams the file again from its start. */
  reread: () => AsyncIterable<Uint8Array> | Promise<AsyncIterable<Uint8Array>>;
}

/** The confirmed duplicates: the first maxErrors of them, in line order, and how many there are. */
export interface ConfirmedDuplicates {
  errors: BatchLineError[];
  /** How many confirmed duplicates are on lines without another error (so not counted yet). */
  newLines: number;
  /** False when suspects were left unconfirmed (maxErrors duplicates were found first). */
  complete: boolean;
}

/**
 * Re-reads the file to turn suspected duplicates (lines whose custom_id hash was seen before)
 * into exact answers, in line order, a bounded number of suspects per re-read. Reads no more
 * once `maxErrors` duplicates are confirmed: later ones could not be reported anyway.
 */
export async function confirmDuplicates(suspects: SuspectList, check: DuplicateCheck): Promise<ConfirmedDuplicates> {
  const confirmed: ConfirmedDuplicates = { errors: [], newLines: 0, complete: true };
  const { hasher, maxErrors } = check;
  const fast: FastLine = { idFrom: 0, idTo: 0, modelFrom: 0, modelTo: 0 };
  for (let first = 0; first < suspects.length && confirmed.errors.length < maxErrors; first += SUSPECTS_PER_REREAD) {
    const last = Math.min(suspects.length, first + SUSPECTS_PER_REREAD);
    const lastLine = suspects.line(last - 1);
    /** The round's suspect lines, each with whether it had another error. */
    const roundSuspects = new Map<number, boolean>();
    const hashes = new HashSet64();
    for (let k = first; k < last; k++) {
      roundSuspects.set(suspects.line(k), suspects.hadError(k));
      hashes.add(suspects.h1(k), suspects.h2(k));
    }

    // Every line up to the round's last suspect whose custom_id has one of the suspects' hashes,
    // in order, with its real custom_id: the first use of each is remembered, the rest are duplicates.
    const firstLineOf = new Map<string, number>();
    let total = 0;
    let done = false;
    const onLine: RawLineHandler = (buf, from, to, n, _start, _end, tooLong) => {
      if (n > lastLine) {
        done = true;
        return;
      }
      if (tooLong) {
        total++;
        return;
      }
      if (isBlankRange(buf, from, to)) return;
      total++;
      let id: string | undefined;
      if (scanRequestLine(buf, from, to, check.expect, fast)) {
        hasher.bytes(buf, fast.idFrom, fast.idTo);
        if (!hashes.has(hashOut.h1, hashOut.h2)) return;
        id = buf.toString('utf8', fast.idFrom, fast.idTo);
      } else {
        id = inspectRequestLine(n, buf.subarray(from, to), check.endpoint).customId;
        if (id === undefined) return;
        hasher.text(id);
        if (!hashes.has(hashOut.h1, hashOut.h2)) return;
      }
      const earlier = firstLineOf.get(id);
      if (earlier !== undefined) {
        const hadError = roundSuspects.get(n);
        if (hadError !== undefined) {
          if (confirmed.errors.length < maxErrors) confirmed.errors.push(fileErrors.duplicateCustomId(n, id, earlier));
          if (!hadError) confirmed.newLines++;
        }
      } else if (total <= check.maxRequests) {
        firstLineOf.set(id, n);
      }
    };
    const splitter = new JsonlLineSplitter({ maxLineBytes: check.maxLineBytes });
    for await (const chunk of await check.reread()) {
      splitter.pushRaw(chunk, onLine);
      if (done) break;
    }
    if (!done) splitter.endRaw(onLine);
    if (last < suspects.length && confirmed.errors.length >= maxErrors) confirmed.complete = false;
  }
  return confirmed;
}
