// Behaviour every BlobStore must have, whatever stores it. An adapter's test file calls
// blobStoreContract() with a setup that builds a fresh store.
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlobNotFoundError, type BlobStore } from '../../shared/ports.js';

export interface BlobStoreSetup {
  store: BlobStore;
  close(): Promise<void>;
  /** A body this large goes through the store's streaming (multipart) path. */
  largeBytes: number;
  /** Why the backend serves presigned GETs without the response headers they ask for (moto), if it does. */
  ignoresResponseHeaderOverrides?: string;
}

export async function readAll(body: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for await (const piece of body) pieces.push(Buffer.from(piece));
  return Buffer.concat(pieces);
}

async function* pieces(data: Buffer, size: number): AsyncIterable<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

async function* failingAfter(data: Buffer): AsyncIterable<Uint8Array> {
  yield data;
  throw new Error('the source broke');
}

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

let counter = 0;
const uniqueKey = (name: string) => `contract/${process.pid}-${Date.now()}-${counter++}/${name}`;

export function blobStoreContract(name: string, setup: () => Promise<BlobStoreSetup>): void {
  describe(`BlobStore contract: ${name}`, () => {
    let env: BlobStoreSetup;
    let store: BlobStore;
    beforeAll(async () => {
      env = await setup();
      store = env.store;
    });
    afterAll(async () => {
      await env?.close();
    });

    it('stores strings, bytes and streams and reads them back', async () => {
      const [a, b, c] = [uniqueKey('a.txt'), uniqueKey('b.bin'), uniqueKey('c.jsonl')];
      expect(await store.put(a, 'héllo\n')).toEqual({ bytes: 7 });
      expect(await store.put(b, new Uint8Array([0, 1, 2, 255]))).toEqual({ bytes: 4 });
      expect(await store.put(c, pieces(Buffer.from('{"x":1}\n{"x":2}\n'), 3))).toEqual({ bytes: 16 });
      expect((await readAll(await store.get(a))).toString('utf8')).toBe('héllo\n');
      expect([...(await readAll(await store.get(b)))]).toEqual([0, 1, 2, 255]);
      expect((await readAll(await store.get(c))).toString('utf8')).toBe('{"x":1}\n{"x":2}\n');
      expect(await store.size(c)).toBe(16);
    });

    it('stores an empty body', async () => {
      const key = uniqueKey('empty');
      expect(await store.put(key, '')).toEqual({ bytes: 0 });
      expect(await store.size(key)).toBe(0);
      expect((await readAll(await store.get(key))).length).toBe(0);
    });

    it('replaces an object on put', async () => {
      const key = uniqueKey('replace');
      await store.put(key, 'first version, longer');
      await store.put(key, 'second');
      expect((await readAll(await store.get(key))).toString()).toBe('second');
      expect(await store.size(key)).toBe(6);
    });

    it('reads byte ranges, end exclusive', async () => {
      const key = uniqueKey('range');
      await store.put(key, '0123456789');
      const range = async (start: number, end: number) => (await readAll(await store.get(key, { start, end }))).toString();
      // (0, 1) would be 'bytes=0-0', which s3rver 3.7.1 reads as the whole object (S3 does not).
      expect(await range(0, 2)).toBe('01');
      expect(await range(3, 7)).toBe('3456');
      expect(await range(5, 10)).toBe('56789');
      expect(await range(8, 100)).toBe('89');
      expect(await range(4, 4)).toBe('');
      expect(await range(10, 20)).toBe('');
    });

    it('reports a missing object', async () => {
      const key = uniqueKey('missing');
      expect(await store.size(key)).toBeUndefined();
      await expect(store.get(key)).rejects.toBeInstanceOf(BlobNotFoundError);
      await expect(store.get(key, { start: 0, end: 5 })).rejects.toBeInstanceOf(BlobNotFoundError);
      await expect(store.get(key, { start: 2, end: 2 })).rejects.toBeInstanceOf(BlobNotFoundError);
    });

    it('streams a large body in and out intact', async () => {
      const key = uniqueKey('large.bin');
      const data = randomBytes(env.largeBytes);
      expect(await store.put(key, pieces(data, 64 * 1024 + 7))).toEqual({ bytes: data.length });
      expect(await store.size(key)).toBe(data.length);
      expect(sha(await readAll(await store.get(key)))).toBe(sha(data));
      const start = env.largeBytes - 1_000_003;
      expect(sha(await readAll(await store.get(key, { start, end: start + 1_000_000 })))).toBe(
        sha(data.subarray(start, start + 1_000_000)),
      );
    });

    it('leaves nothing behind when the source of a put fails', async () => {
      const key = uniqueKey('broken');
      await expect(store.put(key, failingAfter(randomBytes(env.largeBytes)))).rejects.toThrow('the source broke');
      expect(await store.size(key)).toBeUndefined();
      const small = uniqueKey('broken-small');
      await expect(store.put(small, failingAfter(Buffer.from('abc')))).rejects.toThrow('the source broke');
      expect(await store.size(small)).toBeUndefined();
    });

    it('joins parts in order', async () => {
      const parts = [uniqueKey('p0'), uniqueKey('p1'), uniqueKey('p2'), uniqueKey('p3')];
      await store.put(parts[0]!, 'a\n');
      await store.put(parts[1]!, '');
      await store.put(parts[2]!, 'b\nc\n');
      await store.put(parts[3]!, 'd\n');
      const target = uniqueKey('joined');
      expect(await store.concat(target, [parts[2]!, parts[0]!, parts[1]!, parts[3]!])).toEqual({ bytes: 8 });
      expect((await readAll(await store.get(target))).toString()).toBe('b\nc\na\nd\n');
      // The parts are untouched.
      expect(await store.size(parts[2]!)).toBe(4);
    });

    it('joins no parts into an empty object', async () => {
      const target = uniqueKey('joined-empty');
      expect(await store.concat(target, [])).toEqual({ bytes: 0 });
      expect(await store.size(target)).toBe(0);
    });

    it('joins large parts by streaming', async () => {
      const a = randomBytes(Math.ceil(env.largeBytes / 2));
      const b = randomBytes(Math.ceil(env.largeBytes / 3));
      const c = Buffer.from('tail\n');
      const keys = [uniqueKey('big-a'), uniqueKey('big-b'), uniqueKey('big-c')];
      await store.put(keys[0]!, a);
      await store.put(keys[1]!, pieces(b, 100_000));
      await store.put(keys[2]!, c);
      const target = uniqueKey('big-joined');
      const all = Buffer.concat([a, b, c]);
      expect(await store.concat(target, keys)).toEqual({ bytes: all.length });
      expect(sha(await readAll(await store.get(target)))).toBe(sha(all));
    });

    it('joins parts of known sizes, and stores nothing when the gate fails', async () => {
      const data = [randomBytes(Math.ceil(env.largeBytes / 2)), randomBytes(Math.ceil(env.largeBytes / 3)), Buffer.from('tail\n')];
      const keys = data.map((_, i) => uniqueKey(`sized-${i}`));
      for (const [i, key] of keys.entries()) await store.put(key, data[i]!);
      const sizes = data.map((part) => part.length);
      const all = Buffer.concat(data);
      const target = uniqueKey('sized-joined');
      expect(await store.concat(target, keys, { sizes, gate: Promise.resolve() })).toEqual({ bytes: all.length });
      expect(sha(await readAll(await store.get(target)))).toBe(sha(all));

      const gated = uniqueKey('gated');
      const closed = Promise.reject(new Error('the md5 differs'));
      await expect(store.concat(gated, keys, { sizes, gate: closed })).rejects.toThrow('the md5 differs');
      await expect(store.concat(uniqueKey('gated-small'), [keys[2]!], { gate: closed })).rejects.toThrow('the md5 differs');
      expect(await store.size(gated)).toBeUndefined();
    });

    it('refuses to join a missing part and creates nothing', async () => {
      const present = uniqueKey('present');
      await store.put(present, 'x\n');
      const target = uniqueKey('joined-missing');
      await expect(store.concat(target, [present, uniqueKey('absent')])).rejects.toBeInstanceOf(BlobNotFoundError);
      expect(await store.size(target)).toBeUndefined();
    });

    it('deletes objects and ignores missing ones', async () => {
      const keys = [uniqueKey('d0'), uniqueKey('d1'), uniqueKey('d2')];
      for (const key of keys) await store.put(key, 'x');
      await store.delete([keys[0]!, keys[2]!, uniqueKey('never-there')]);
      expect(await store.size(keys[0]!)).toBeUndefined();
      expect(await store.size(keys[1]!)).toBe(1);
      expect(await store.size(keys[2]!)).toBeUndefined();
      await store.delete([]);
    });

    it('lists keys under a prefix in order', async () => {
      const base = uniqueKey('listing');
      const keys = [`${base}/b/2.jsonl`, `${base}/a/1.jsonl`, `${base}/b/10.jsonl`, `${base}/c.jsonl`];
      for (const key of keys) await store.put(key, 'x');
      await store.put(`${base}-sibling/x`, 'x');
      expect(await store.list(`${base}/`)).toEqual([...keys].sort());
      expect(await store.list(`${base}/b/`)).toEqual([`${base}/b/10.jsonl`, `${base}/b/2.jsonl`]);
      expect(await store.list(`${base}/b/1`)).toEqual([`${base}/b/10.jsonl`]);
      expect(await store.list(`${base}/nothing/`)).toEqual([]);
    });

    it('presigns a download that needs no credentials, where the backend can', async () => {
      if (!store.presignGet) return;
      const key = uniqueKey('signed.jsonl');
      await store.put(key, '{"ok":true}\n');
      const url = await store.presignGet(key, { expiresInSeconds: 60, filename: '评测_output.jsonl' });
      const response = await fetch(url);
      expect(response.status).toBe(200);
      expect(await response.text()).toBe('{"ok":true}\n');
      // RFC 6266: an ASCII fallback, and the name itself as filename* (shared/filenames.ts).
      if (!env.ignoresResponseHeaderOverrides) {
        expect(response.headers.get('content-disposition')).toBe(
          `attachment; filename="??_output.jsonl"; filename*=UTF-8''${encodeURIComponent('评测')}_output.jsonl`,
        );
      }
    });
  });
}
