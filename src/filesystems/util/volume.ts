/**
 * Safe access to a {@link BlockReader}: bounds-checked reads, I/O errors mapped to `E_IO`, slicing
 * a disk into partition views, and a bounded LRU cache for metadata blocks.
 */
import type { BlockReader } from '../../core/block-reader.js';
import { VmvaultError, isVmvaultError } from '../../core/errors.js';
import { fsCorrupt } from './errors.js';

/** Largest single read the readers will ever issue (guards against absurd lengths). */
export const MAX_READ = 64 * 1024 * 1024;

/**
 * Reads `length` bytes at `offset` of `reader`, failing with `E_FS_CORRUPT` when the range lies
 * outside the reader (metadata pointing off the disk) and `E_IO` when the reader itself fails.
 */
export async function readAt(
  reader: BlockReader,
  offset: number,
  length: number,
  what = 'data',
): Promise<Buffer> {
  if (
    !Number.isSafeInteger(offset) ||
    !Number.isSafeInteger(length) ||
    offset < 0 ||
    length < 0 ||
    length > MAX_READ ||
    offset + length > reader.size
  ) {
    throw fsCorrupt(`${what} at byte ${offset} (+${length}) lies outside the ${reader.size}-byte volume`, {
      offset,
      length,
    });
  }
  if (length === 0) return Buffer.alloc(0);
  let buf: Buffer;
  try {
    buf = await reader.read(offset, length);
  } catch (err) {
    if (isVmvaultError(err)) throw err;
    throw new VmvaultError(
      'E_IO',
      `reading ${length} bytes at ${offset} failed: ${(err as Error)?.message ?? err}`,
      {
        cause: err,
      },
    );
  }
  if (buf.length !== length) {
    throw new VmvaultError('E_IO', `short read: wanted ${length} bytes at ${offset}, got ${buf.length}`);
  }
  return buf;
}

/** A window `[start, start+size)` of another reader, itself a {@link BlockReader}. */
export class SliceReader implements BlockReader {
  readonly size: number;
  constructor(
    private readonly parent: BlockReader,
    readonly start: number,
    size: number,
  ) {
    if (start < 0 || size < 0 || start + size > parent.size) {
      throw fsCorrupt(`partition ${start}+${size} extends past the end of the ${parent.size}-byte disk`);
    }
    this.size = size;
  }
  read(offset: number, length: number): Promise<Buffer> {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      return Promise.reject(fsCorrupt(`read ${offset}+${length} outside the ${this.size}-byte partition`));
    }
    return this.parent.read(this.start + offset, length);
  }
}

/**
 * Fixed-size block cache with least-recently-used eviction, for metadata only (file data is read
 * straight through so it does not evict inode tables and directories).
 */
export class BlockCache {
  private readonly map = new Map<number, Promise<Buffer>>();
  constructor(
    private readonly reader: BlockReader,
    readonly blockSize: number,
    private readonly maxBlocks: number,
  ) {}

  /** Reads block `n` (counted in `blockSize` units from the start of the reader). */
  async block(n: number, what = 'metadata block'): Promise<Buffer> {
    const hit = this.map.get(n);
    if (hit) {
      this.map.delete(n);
      this.map.set(n, hit);
      return hit;
    }
    const p = readAt(this.reader, n * this.blockSize, this.blockSize, `${what} ${n}`);
    this.map.set(n, p);
    p.catch(() => this.map.delete(n));
    if (this.map.size > this.maxBlocks) {
      const oldest = this.map.keys().next().value;
      if (oldest !== undefined) this.map.delete(oldest);
    }
    return p;
  }

  /** Reads `length` bytes at byte `offset` through the cache (may span blocks). */
  async bytes(offset: number, length: number, what = 'metadata'): Promise<Buffer> {
    const first = Math.floor(offset / this.blockSize);
    const last = Math.floor((offset + length - 1) / this.blockSize);
    if (length <= 0) return Buffer.alloc(0);
    if (first === last) {
      const b = await this.block(first, what);
      const s = offset - first * this.blockSize;
      return b.subarray(s, s + length);
    }
    const parts: Buffer[] = [];
    for (let n = first; n <= last; n++) parts.push(await this.block(n, what));
    const all = Buffer.concat(parts);
    const s = offset - first * this.blockSize;
    return all.subarray(s, s + length);
  }
}
