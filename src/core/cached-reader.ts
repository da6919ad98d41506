/**
 * A {@link BlockReader} that reads its source in aligned blocks and keeps the most recent ones,
 * so the many small metadata reads of a filesystem walk (inodes, directory blocks) become a few
 * large reads.
 */
import type { BlockReader } from './block-reader.js';

/** Wraps `inner` with an LRU cache of `blockSize`-aligned blocks. */
export class CachedBlockReader implements BlockReader {
  readonly size: number;
  private readonly blocks = new Map<number, Promise<Buffer>>();

  constructor(
    private readonly inner: BlockReader,
    private readonly blockSize = 64 * 1024,
    private readonly maxBlocks = 512,
  ) {
    this.size = inner.size;
  }

  private block(n: number): Promise<Buffer> {
    let b = this.blocks.get(n);
    if (b) {
      this.blocks.delete(n);
    } else {
      const start = n * this.blockSize;
      b = this.inner.read(start, Math.min(this.blockSize, this.size - start));
      b.catch(() => this.blocks.delete(n));
    }
    this.blocks.set(n, b);
    if (this.blocks.size > this.maxBlocks) this.blocks.delete(this.blocks.keys().next().value as number);
    return b;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (length > this.blockSize * 4) return this.inner.read(offset, length); // bulk data: no caching
    const first = Math.floor(offset / this.blockSize);
    const last = Math.floor((offset + length - 1) / this.blockSize);
    if (length === 0) return Buffer.alloc(0);
    if (first === last) {
      const b = await this.block(first);
      const at = offset - first * this.blockSize;
      return b.subarray(at, at + length);
    }
    const out = Buffer.alloc(length);
    for (let n = first; n <= last; n++) {
      const b = await this.block(n);
      const start = n * this.blockSize;
      const from = Math.max(offset, start);
      const to = Math.min(offset + length, start + b.length);
      b.copy(out, from - offset, from - start, to - start);
    }
    return out;
  }
}
