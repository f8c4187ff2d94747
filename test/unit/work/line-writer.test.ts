// A chunk's result object written line by line as the lines finish: in order, in pieces (a large
// line alone and uncopied), and nothing stored when the store fails, with every waiting write told.
import { describe, expect, it } from 'vitest';
import type { BlobBody, BlobStore } from '../../../shared/ports.js';
import { LineWriter, linesBody, PIECE_BYTES } from '../../../shared/work/line-writer.js';

/** A store whose put reads the body as a stream and keeps its pieces. */
function recordingStore(options: { failAfterPieces?: number } = {}) {
  const pieces: Uint8Array[] = [];
  const blobs = {
    async put(_key: string, body: BlobBody) {
      for await (const piece of body as AsyncIterable<Uint8Array>) {
        if (options.failAfterPieces !== undefined && pieces.length >= options.failAfterPieces) throw new Error('disk full');
        pieces.push(piece);
      }
      return { bytes: pieces.reduce((sum, piece) => sum + piece.length, 0) };
    },
  } as unknown as BlobStore;
  return { blobs, pieces, text: () => Buffer.concat(pieces).toString('utf8') };
}

describe('LineWriter', () => {
  it('stores the lines in order, many small ones to a piece, a large one alone and as it is', async () => {
    const store = recordingStore();
    const writer = new LineWriter(store.blobs, 'k');
    const large = Buffer.from(`${'x'.repeat(PIECE_BYTES + 10)}\n`);
    const writes = [...Array.from({ length: 1_000 }, (_, i) => writer.write(`line ${i}\n`)), writer.write(large), writer.write('last\n')];
    await Promise.all(writes);
    expect(await writer.end()).toEqual({ bytes: store.text().length });
    const lines = store.text().split('\n');
    expect(lines.slice(0, 1_000)).toEqual(Array.from({ length: 1_000 }, (_, i) => `line ${i}`));
    expect(lines.at(-2)).toBe('last');
    expect(store.pieces.length).toBeLessThanOrEqual(4);
    expect(store.pieces).toContain(large);
  });

  it('stores nothing when the store fails: waiting and later writes reject', async () => {
    const store = recordingStore({ failAfterPieces: 1 });
    const writer = new LineWriter(store.blobs, 'k');
    await writer.write('first\n');
    const waiting = writer.write('second\n');
    await expect(waiting).rejects.toThrow('disk full');
    await expect(writer.write('third\n')).rejects.toThrow('disk full');
    await expect(writer.end()).rejects.toThrow('disk full');
  });

  it('aborts: nothing more is stored, and writes after it reject', async () => {
    const store = recordingStore();
    const writer = new LineWriter(store.blobs, 'k');
    await writer.abort(new Error('the run failed'));
    await expect(writer.write('late\n')).rejects.toThrow('the run failed');
  });
});

describe('linesBody', () => {
  it('gives lines in pieces of about a MiB, never one string of them all', async () => {
    const pieces: Uint8Array[] = [];
    const lines = Array.from({ length: 30_000 }, (_, i) => `{"custom_id":"${i}","padding":"${'p'.repeat(80)}"}\n`);
    for await (const piece of linesBody(lines)) pieces.push(piece);
    expect(Buffer.concat(pieces).toString('utf8')).toBe(lines.join(''));
    expect(pieces.length).toBeGreaterThan(1);
    expect(Math.max(...pieces.map((piece) => piece.length))).toBeLessThan(PIECE_BYTES + 200);
  });
});
