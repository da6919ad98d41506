/**
 * A hash table from 32-byte digests to the numbers 0, 1, 2, … in insertion order, without a
 * string or an object per key: lookups allocate nothing, which matters where millions of
 * digests are looked up (dedup during a backup, checking every digest of a parent's leaf pages
 * in an incremental, locating chunks for restores and mounts).
 *
 * Open addressing with linear probing over an `Int32Array` of value numbers, with a parallel
 * array of 32-bit tags (digest bytes 4–7) so that most probes that do not match are rejected
 * without touching the stored digest. Digests are uniformly random (SHA-256 or HMAC-SHA-256),
 * so a few of their bytes make the hash; a random per-table seed mixed with bytes 0–3 and 8–11
 * keeps a repository that holds crafted digests (colliding on a few bytes) from choosing the
 * slots they land in. The table grows at 50 % load and never shrinks.
 */
import { randomInt } from 'node:crypto';

/** Digest length the table is made for. */
const KEY_BYTES = 32;

function u32(d: Uint8Array, at: number): number {
  return d[at]! | (d[at + 1]! << 8) | (d[at + 2]! << 16) | (d[at + 3]! << 24) | 0;
}

function sameDigest(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < KEY_BYTES; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Digest → value number. Keys are read back through `keyOf`, so the caller stores them once. */
export class DigestTable {
  private slots: Int32Array;
  private tags: Int32Array;
  private mask: number;
  private count = 0;
  private readonly seed = randomInt(0x7fffffff);

  /**
   * @param keyOf the digest of value number `n` (the one {@link add} returned), kept by the caller.
   * @param expected entries to size the table for at first.
   */
  constructor(
    private readonly keyOf: (n: number) => Uint8Array,
    expected = 1024,
  ) {
    let cap = 16;
    while (cap < expected * 2) cap *= 2;
    this.slots = new Int32Array(cap).fill(-1);
    this.tags = new Int32Array(cap);
    this.mask = cap - 1;
  }

  /** Number of digests held. */
  get size(): number {
    return this.count;
  }

  private home(d: Uint8Array): number {
    const h = Math.imul(u32(d, 0) ^ this.seed, 0x9e3779b1) ^ Math.imul(u32(d, 8), 0x85ebca77);
    return (h ^ (h >>> 15)) & this.mask;
  }

  /** The value number of `digest`, or -1. */
  get(digest: Uint8Array): number {
    const tag = u32(digest, 4);
    for (let h = this.home(digest); ; h = (h + 1) & this.mask) {
      const n = this.slots[h]!;
      if (n < 0) return -1;
      if (this.tags[h] === tag && sameDigest(this.keyOf(n), digest)) return n;
    }
  }

  /** True when `digest` is held. */
  has(digest: Uint8Array): boolean {
    return this.get(digest) >= 0;
  }

  /**
   * Records `digest` as the next value number, which it returns, unless it is held already:
   * then -1 and nothing changes. `keyOf(n)` must answer for the new number from now on.
   */
  add(digest: Uint8Array): number {
    if (digest.length !== KEY_BYTES)
      throw new RangeError(`a digest is ${KEY_BYTES} bytes, not ${digest.length}`);
    if (this.has(digest)) return -1;
    if ((this.count + 1) * 2 > this.slots.length) this.grow();
    const n = this.count++;
    this.place(digest, n);
    return n;
  }

  /** Forgets every digest. */
  clear(): void {
    this.slots.fill(-1);
    this.count = 0;
  }

  private place(digest: Uint8Array, n: number): void {
    let h = this.home(digest);
    while (this.slots[h]! >= 0) h = (h + 1) & this.mask;
    this.slots[h] = n;
    this.tags[h] = u32(digest, 4);
  }

  private grow(): void {
    const old = this.slots;
    this.slots = new Int32Array(old.length * 2).fill(-1);
    this.tags = new Int32Array(old.length * 2);
    this.mask = this.slots.length - 1;
    for (const n of old) if (n >= 0) this.place(this.keyOf(n), n);
  }
}
