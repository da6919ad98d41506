/** A small seeded PRNG so random writes are the same on every run. */

/** A seeded 32-bit generator (mulberry32). */
export class Prng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Next unsigned 32-bit value. */
  nextU32(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** Uniform integer in `[0, n)`. */
  below(n: number): number {
    return Math.floor((this.nextU32() / 0x1_0000_0000) * n);
  }

  /** A buffer of `length` random (incompressible) bytes. */
  bytes(length: number): Buffer {
    const buf = Buffer.alloc(length);
    let i = 0;
    for (; i + 4 <= length; i += 4) buf.writeUInt32LE(this.nextU32(), i);
    for (; i < length; i++) buf[i] = this.nextU32() & 0xff;
    return buf;
  }

  /** Shuffles `items` in place (Fisher–Yates) and returns it. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.below(i + 1);
      [items[i], items[j]] = [items[j]!, items[i]!];
    }
    return items;
  }
}
