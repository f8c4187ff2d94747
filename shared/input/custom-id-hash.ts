// 64-bit hashes of custom_ids, and a compact set of them: validation remembers each custom_id in
// 8-16 bytes (not the string), and confirms the rare repeated hash by re-reading the file
// (duplicates.ts), so a collision never reports a false duplicate.

/** The two 32-bit halves of the last hash computed (module state, read right after hashBytes). */
export const hashOut = { h1: 0, h2: 0 };

/**
 * A seeded 64-bit hash (two 32-bit lanes, murmur3-style mixing) of buf[from, to). The seed is
 * random per validation, so nobody can prepare custom_ids that collide.
 */
export function hashBytes(buf: Uint8Array, from: number, to: number, seed: number): void {
  let a = (0x811c9dc5 ^ seed) >>> 0;
  let b = (0x9e3779b9 ^ Math.imul(seed, 0x85ebca6b)) >>> 0;
  for (let i = from; i < to; i++) {
    const c = buf[i]!;
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
    b ^= b >>> 15;
  }
  const n = to - from;
  a ^= n;
  b ^= n;
  a ^= a >>> 16;
  a = Math.imul(a, 0x85ebca6b);
  a ^= a >>> 13;
  a = Math.imul(a, 0xc2b2ae35);
  a ^= a >>> 16;
  b ^= b >>> 16;
  b = Math.imul(b, 0x7feb352d);
  b ^= b >>> 15;
  b = Math.imul(b, 0x846ca68b);
  b ^= b >>> 16;
  hashOut.h1 = a >>> 0;
  hashOut.h2 = b >>> 0;
}

/**
 * A set of 64-bit hashes: open addressing with linear probing in one Uint32Array (8 bytes a slot,
 * at most 70% full, so about 12-23 bytes an entry: 16 MB for a million custom_ids).
 */
export class HashSet64 {
  private slots: Uint32Array;
  private mask: number;
  private count = 0;

  constructor(initialCapacity = 1 << 12) {
    let capacity = 16;
    while (capacity < initialCapacity) capacity *= 2;
    this.slots = new Uint32Array(capacity * 2);
    this.mask = capacity - 1;
  }

  get size(): number {
    return this.count;
  }

  /** Bytes held by the table. */
  get bytes(): number {
    return this.slots.byteLength;
  }

  has(h1: number, h2: number): boolean {
    if (h1 === 0 && h2 === 0) h1 = 1;
    const index = this.slotOf(h1, h2);
    return this.slots[index * 2] === h1 && this.slots[index * 2 + 1] === h2;
  }

  /** Adds the hash; returns true when it was already there. */
  add(h1: number, h2: number): boolean {
    if (h1 === 0 && h2 === 0) h1 = 1; // (0, 0) marks an empty slot
    const index = this.slotOf(h1, h2);
    const slots = this.slots;
    if (slots[index * 2] === h1 && slots[index * 2 + 1] === h2) return true;
    slots[index * 2] = h1;
    slots[index * 2 + 1] = h2;
    this.count++;
    if (this.count * 10 > (this.mask + 1) * 7) this.grow();
    return false;
  }

  /** The slot that holds the hash, or else the empty slot where it goes (linear probing). */
  private slotOf(h1: number, h2: number): number {
    const slots = this.slots;
    const mask = this.mask;
    let index = (h2 ^ Math.imul(h1, 0x9e3779b1)) & mask;
    for (;;) {
      const a = slots[index * 2]!;
      const b = slots[index * 2 + 1]!;
      if ((a === 0 && b === 0) || (a === h1 && b === h2)) return index;
      index = (index + 1) & mask;
    }
  }

  private grow(): void {
    const old = this.slots;
    const capacity = (this.mask + 1) * 2;
    this.slots = new Uint32Array(capacity * 2);
    this.mask = capacity - 1;
    this.count = 0;
    for (let i = 0; i < old.length; i += 2) {
      const a = old[i]!;
      const b = old[i + 1]!;
      if (a !== 0 || b !== 0) this.add(a, b);
    }
  }
}

/** Hashes custom_ids with one seed; the result is in hashOut. */
export interface CustomIdHasher {
  /** Hashes the bytes buf[from, to) (a custom_id without escapes: its raw bytes are its UTF-8). */
  bytes(buf: Uint8Array, from: number, to: number): void;
  /** Hashes a custom_id's UTF-8 encoding, as `bytes` would hash the same id. */
  text(id: string): void;
}

/** A hasher with this seed; `weak` (tests only) keeps 2 bits, so that collisions happen and must be told apart. */
export function customIdHasher(seed: number, weak = false): CustomIdHasher {
  const bytes = weak
    ? (buf: Uint8Array, from: number, to: number) => {
        hashBytes(buf, from, to, seed);
        hashOut.h1 &= 0x3;
        hashOut.h2 = 0;
      }
    : (buf: Uint8Array, from: number, to: number) => hashBytes(buf, from, to, seed);
  return {
    bytes,
    text: (id) => {
      const encoded = Buffer.from(id);
      bytes(encoded, 0, encoded.length);
    },
  };
}
