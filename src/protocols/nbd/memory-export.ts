/** An in-memory export, mainly for tests. */
import type { AllocationExtent, NbdExport, ReadSegment } from './export.js';

/** Granularity at which {@link MemoryExport} tracks zero blocks for holes and block status. */
const BLOCK = 4096;

/**
 * A writable (or read-only) export backed by a Buffer. It tracks which 4 KiB blocks are known to
 * be zero so it can answer `base:allocation` and sparse reads.
 */
export class MemoryExport implements NbdExport {
  readonly size: number;
  readonly readOnly: boolean;
  readonly multiConn = true;
  readonly description: string | undefined;
  /** The bytes (exposed for tests). */
  readonly data: Buffer;
  /** Calls of flush() so far (for tests). */
  flushCount = 0;
  private readonly zero: Uint8Array;

  constructor(sizeOrData: number | Buffer, opts: { readOnly?: boolean; description?: string } = {}) {
    this.data = typeof sizeOrData === 'number' ? Buffer.alloc(sizeOrData) : sizeOrData;
    this.size = this.data.length;
    this.readOnly = opts.readOnly ?? false;
    this.description = opts.description;
    this.zero = new Uint8Array(Math.ceil(this.size / BLOCK));
    for (let b = 0; b < this.zero.length; b++) this.refresh(b);
  }

  private refresh(block: number): void {
    const s = block * BLOCK;
    const e = Math.min(this.size, s + BLOCK);
    let z = 1;
    for (let i = s; i < e; i++) {
      if (this.data[i] !== 0) {
        z = 0;
        break;
      }
    }
    this.zero[block] = z;
  }

  private touched(offset: number, length: number): void {
    for (let b = Math.floor(offset / BLOCK); b * BLOCK < offset + length; b++) this.refresh(b);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    return Buffer.from(this.data.subarray(offset, offset + length));
  }

  async readSparse(offset: number, length: number): Promise<ReadSegment[]> {
    const out: ReadSegment[] = [];
    for (const e of await this.blockStatus(offset, length)) {
      const s = Math.max(e.offset, offset);
      const t = Math.min(e.offset + e.length, offset + length);
      out.push(
        e.data
          ? { offset: s, length: t - s, data: Buffer.from(this.data.subarray(s, t)) }
          : { offset: s, length: t - s },
      );
    }
    return out;
  }

  async blockStatus(offset: number, length: number): Promise<AllocationExtent[]> {
    const out: AllocationExtent[] = [];
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      const b = Math.floor(pos / BLOCK);
      const isZero = this.zero[b] === 1;
      let t = Math.min(end, (b + 1) * BLOCK);
      while (t < end && (this.zero[Math.floor(t / BLOCK)] === 1) === isZero) t = Math.min(end, t + BLOCK);
      out.push({ offset: pos, length: t - pos, data: !isZero });
      pos = t;
    }
    return out;
  }

  async write(offset: number, data: Buffer): Promise<void> {
    data.copy(this.data, offset);
    this.touched(offset, data.length);
  }

  async flush(): Promise<void> {
    this.flushCount++;
  }

  async trim(offset: number, length: number): Promise<void> {
    await this.writeZeroes(offset, length);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.data.fill(0, offset, offset + length);
    this.touched(offset, length);
  }
}
