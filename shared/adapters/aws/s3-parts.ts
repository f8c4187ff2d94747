// The pieces of S3 multipart writes that need no client: the parts a stream is cut into, the groups
// of objects a parallel join sends as one part each, and what Complete is told of a part.
import type { CompletedPart, UploadPartCommandOutput } from '@aws-sdk/client-s3';

/** S3's smallest multipart part (all but the last). */
export const MIN_PART_BYTES = 5 * 1024 * 1024;

/**
 * As lib-storage does: the part's checksum (the SDK adds CRC32 by default on AWS) goes with it into
 * Complete; S3-compatible servers return none.
 */
export function completedPart(PartNumber: number, out: UploadPartCommandOutput): CompletedPart {
  return {
    PartNumber,
    ETag: out.ETag,
    ...(out.ChecksumCRC32 && { ChecksumCRC32: out.ChecksumCRC32 }),
    ...(out.ChecksumCRC32C && { ChecksumCRC32C: out.ChecksumCRC32C }),
    ...(out.ChecksumCRC64NVME && { ChecksumCRC64NVME: out.ChecksumCRC64NVME }),
    ...(out.ChecksumSHA1 && { ChecksumSHA1: out.ChecksumSHA1 }),
    ...(out.ChecksumSHA256 && { ChecksumSHA256: out.ChecksumSHA256 }),
  };
}

export interface PartGroup {
  keys: string[];
  sizes: number[];
  bytes: number;
}

/** Consecutive objects in groups of at least MIN_PART_BYTES (the last group may have fewer). */
export function groupParts(keys: readonly string[], sizes: readonly number[]): PartGroup[] {
  const groups: PartGroup[] = [];
  let group: PartGroup = { keys: [], sizes: [], bytes: 0 };
  for (const [i, key] of keys.entries()) {
    group.keys.push(key);
    group.sizes.push(sizes[i]!);
    group.bytes += sizes[i]!;
    if (group.bytes >= MIN_PART_BYTES) {
      groups.push(group);
      group = { keys: [], sizes: [], bytes: 0 };
    }
  }
  if (group.keys.length > 0) groups.push(group);
  return groups;
}

/** Regroups a stream of pieces of any size into parts of exactly `size` bytes (the last may be smaller). */
export async function* splitIntoParts(source: AsyncIterable<Uint8Array>, size: number): AsyncGenerator<Uint8Array, void, undefined> {
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  for await (const piece of source) {
    let rest = piece;
    while (pendingBytes + rest.length >= size) {
      const take = size - pendingBytes;
      pending.push(rest.subarray(0, take));
      yield Buffer.concat(pending, size);
      pending = [];
      pendingBytes = 0;
      rest = rest.subarray(take);
    }
    if (rest.length > 0) {
      pending.push(rest);
      pendingBytes += rest.length;
    }
  }
  if (pendingBytes > 0) yield Buffer.concat(pending, pendingBytes);
}

/** `source`, ending only once `gate` resolves. */
export async function* gated(source: AsyncIterable<Uint8Array>, gate: Promise<unknown> | undefined): AsyncGenerator<Uint8Array> {
  yield* source;
  await gate;
}
