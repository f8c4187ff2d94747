// BlobStore on the local filesystem. Writes go to a temporary file that is renamed into place,
// so a reader (or a restart) never sees half an object, as with S3. A small body given whole (a
// chunk's checkpoint) is written synchronously: a few dozen microseconds of the event loop instead
// of five round trips through libuv's thread pool, which a busy embedded DynamoDB can keep waiting
// for tens of milliseconds; and stored, as far as a killed process goes, the moment put is called.
import { createReadStream, createWriteStream, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { randomToken } from '../../ids.js';
import { type BlobBody, BlobNotFoundError, type BlobStore, type ByteRange, type ConcatOptions } from '../../ports.js';

const SAFE_KEY = /^[A-Za-z0-9_\-.]+(\/[A-Za-z0-9_\-.]+)*$/;
/** Bodies given whole up to this size are written synchronously. */
export const SYNC_PUT_BYTES = 256 * 1024;

export class FsBlobStore implements BlobStore {
  private readonly root: string;

  constructor(root: string) {
    this.root = resolve(root);
  }

  private path(key: string): string {
    if (!SAFE_KEY.test(key) || key.split('/').some((part) => part === '..' || part === '.')) {
      throw new Error(`unsafe blob key: ${key}`);
    }
    return join(this.root, key);
  }

  async put(key: string, body: BlobBody): Promise<{ bytes: number }> {
    if ((typeof body === 'string' || body instanceof Uint8Array) && body.length <= SYNC_PUT_BYTES) return this.putSmall(key, body);
    const source = typeof body === 'string' || body instanceof Uint8Array ? Readable.from([Buffer.from(body)]) : Readable.from(body);
    return this.writeAtomically(key, async (out) => {
      await pipeline(source, out);
    });
  }

  async get(key: string, range?: ByteRange): Promise<AsyncIterable<Uint8Array>> {
    const path = this.path(key);
    const size = await this.size(key);
    if (size === undefined) throw new BlobNotFoundError(key);
    if (range && range.end <= range.start) return Readable.from([]);
    // createReadStream's `end` is inclusive.
    return createReadStream(path, range ? { start: range.start, end: range.end - 1 } : {});
  }

  async size(key: string): Promise<number | undefined> {
    try {
      const info = await stat(this.path(key));
      return info.isFile() ? info.size : undefined;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
  }

  async concat(key: string, parts: string[], options: ConcatOptions = {}): Promise<{ bytes: number }> {
    options.gate?.catch(() => undefined); // awaited below, unless the join fails first
    for (const part of parts) if ((await this.size(part)) === undefined) throw new BlobNotFoundError(part);
    const paths = parts.map((part) => this.path(part));
    async function* joined(): AsyncGenerator<Uint8Array> {
      for (const path of paths) yield* createReadStream(path);
    }
    return this.writeAtomically(key, async (out) => {
      await pipeline(joined(), out);
      await options.gate;
    });
  }

  async delete(keys: string[]): Promise<void> {
    await Promise.all(keys.map((key) => rm(this.path(key), { force: true })));
  }

  async list(prefix: string): Promise<string[]> {
    // Only the directory that holds the prefix's last segment is read; keys are files below it.
    const slash = prefix.lastIndexOf('/');
    const directory = slash < 0 ? '' : prefix.slice(0, slash);
    let entries: string[];
    try {
      entries = (await readdir(join(this.root, directory), { recursive: true, withFileTypes: true }))
        .filter((entry) => entry.isFile() && !entry.name.endsWith('.tmp'))
        .map((entry) =>
          join(entry.parentPath, entry.name)
            .slice(this.root.length + 1)
            .split('\\')
            .join('/'),
        );
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
    return entries.filter((key) => key.startsWith(prefix)).sort();
  }

  private putSmall(key: string, body: string | Uint8Array): { bytes: number } {
    const target = this.path(key);
    const temporary = `${target}.${randomToken(8)}.tmp`;
    const bytes = typeof body === 'string' ? Buffer.from(body) : body;
    mkdirSync(dirname(target), { recursive: true });
    try {
      writeFileSync(temporary, bytes);
      renameSync(temporary, target);
    } catch (error) {
      rmSync(temporary, { force: true });
      throw error;
    }
    return { bytes: bytes.length };
  }

  private async writeAtomically(
    key: string,
    write: (out: NodeJS.WritableStream & ReturnType<typeof createWriteStream>) => Promise<void>,
  ): Promise<{ bytes: number }> {
    const target = this.path(key);
    const temporary = `${target}.${randomToken(8)}.tmp`;
    await mkdir(dirname(target), { recursive: true });
    const out = createWriteStream(temporary);
    try {
      await write(out);
      await rename(temporary, target);
    } catch (error) {
      // The file may not be open yet (a body that fails at once): wait until it is open and closed
      // again, or the removal would come before the file and leave it behind.
      out.destroy();
      await finished(out).catch(() => undefined);
      await rm(temporary, { force: true });
      throw error;
    }
    return { bytes: out.bytesWritten };
  }
}
