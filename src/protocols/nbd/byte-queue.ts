/**
 * A FIFO of received socket chunks that can be consumed without concatenating them first.
 * Reads that fall inside one chunk are zero-copy views.
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  private head = 0; // offset into chunks[0]
  /** Bytes queued. */
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** Reads a big-endian u32 at `pos` bytes from the front without consuming. */
  peekUInt32(pos: number): number {
    const first = this.chunks[0];
    if (first !== undefined && this.head + pos + 4 <= first.length)
      return first.readUInt32BE(this.head + pos);
    return this.peekBytes(pos, 4).readUInt32BE(0);
  }

  /** Copies `n` bytes at `pos` from the front into a new buffer, without consuming. */
  private peekBytes(pos: number, n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let skip = this.head + pos;
    let written = 0;
    for (const c of this.chunks) {
      if (skip >= c.length) {
        skip -= c.length;
        continue;
      }
      const take = Math.min(c.length - skip, n - written);
      c.copy(out, written, skip, skip + take);
      written += take;
      skip = 0;
      if (written === n) break;
    }
    return out;
  }

  /**
   * Consumes `n` bytes (n ≤ length). Returns a view when they lie in one chunk, else a copy.
   * The returned buffer may alias socket memory; do not keep it longer than needed if small.
   */
  take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0]!;
    if (this.head + n <= first.length) {
      const out = first.subarray(this.head, this.head + n);
      this.advance(n);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    this.copyTo(out, 0, n);
    return out;
  }

  /** Consumes `n` bytes (n ≤ length) into `target` at `targetOffset`. */
  copyTo(target: Buffer, targetOffset: number, n: number): void {
    let written = 0;
    while (written < n) {
      const c = this.chunks[0]!;
      const take = Math.min(c.length - this.head, n - written);
      c.copy(target, targetOffset + written, this.head, this.head + take);
      written += take;
      this.advance(take);
    }
  }

  /** Drops `n` bytes (n ≤ length). */
  skip(n: number): void {
    let left = n;
    while (left > 0) {
      const c = this.chunks[0]!;
      const take = Math.min(c.length - this.head, left);
      left -= take;
      this.advance(take);
    }
  }

  private advance(n: number): void {
    this.head += n;
    this.length -= n;
    const first = this.chunks[0]!;
    if (this.head === first.length) {
      this.chunks.shift();
      this.head = 0;
    }
  }

  /**
   * Replaces the queued chunks that lie in `memory` (a scratch read buffer about to be reused)
   * by copies of their unconsumed bytes.
   */
  unalias(memory: ArrayBufferLike): void {
    for (let i = 0; i < this.chunks.length; i++) {
      const c = this.chunks[i]!;
      if (c.buffer !== memory) continue;
      this.chunks[i] = Buffer.from(i === 0 ? c.subarray(this.head) : c);
      if (i === 0) this.head = 0;
    }
  }

  clear(): void {
    this.chunks = [];
    this.head = 0;
    this.length = 0;
  }
}
