/**
 * A writable NBD export of a restore point's disk: guest writes go to an {@link Overlay}, reads
 * merge the overlay's chunks with the point's, and the point never changes.
 *
 * Writes are cut at chunk boundaries. Whole chunks go straight to the overlay; a partial write
 * to a chunk not yet in the overlay first copies the point's chunk in (read-modify-write). Every
 * write runs under its chunk's lock, so concurrent writes to one chunk never lose each other's
 * bytes, and a chunk's bit is set only after its bytes are in the overlay file. Write-zeroes and
 * trim make whole chunks read as zeros without writing data (or write zeros with NO_HOLE);
 * zero chunks of the point that were never written stay holes in reads and block status.
 *
 * Multi-conn is advertised: all connections share this one object, a write is acknowledged only
 * once its bytes are in the overlay file and its bit is set, and a flush on any connection syncs
 * the whole file and every bit set before it — which is what NBD_FLAG_CAN_MULTI_CONN promises.
 */
import { type Extent, VmvaultError } from '../core/index.js';
import type { AllocationExtent, NbdExport, NbdExportBlockSize, ReadSegment } from '../protocols/nbd/index.js';
import type { ChunkState } from './bitmap.js';
import { ChunkLocks } from './chunk-locks.js';
import type { Overlay } from './overlay.js';

/** What an overlay export reads unwritten chunks from (a {@link PointReader} fits). */
export interface OverlayBase {
  readonly size: number;
  readonly chunkSize: number;
  /** Content of chunk `index`, or null for a zero chunk. Callers do not modify it. */
  chunk(index: number): Promise<Buffer | null>;
  /** Chunks `first` … `first + count - 1`, null for zero chunks. */
  chunks(first: number, count: number): Promise<(Buffer | null)[]>;
  /** Data and zero extents of a range, without reading chunk data. */
  extents(offset: number, length: number): Promise<Extent[]>;
}

/** Largest range one BLOCK_STATUS answer covers; the client asks again for the rest. */
const STATUS_SPAN = 1 << 30;

/** A run of consecutive chunks in one state. */
interface Group {
  state: ChunkState;
  first: number;
  /** Exclusive. */
  end: number;
}

/** Writable {@link NbdExport} over a restore point and an overlay file. */
export class OverlayExport implements NbdExport {
  readonly readOnly = false;
  readonly multiConn = true;
  readonly size: number;
  readonly blockSize: NbdExportBlockSize;
  private readonly cs: number;
  private readonly locks = new ChunkLocks();
  private readonly zeros: Buffer;
  private readonly inflight = new Set<Promise<void>>();
  private stopped = false;

  constructor(
    private readonly base: OverlayBase,
    readonly overlay: Overlay,
    readonly description: string,
  ) {
    if (base.size !== overlay.size || base.chunkSize !== overlay.chunkSize) {
      throw new VmvaultError(
        'E_USAGE',
        `overlay ${overlay.path} (${overlay.size} bytes, ${overlay.chunkSize}-byte chunks) does not fit a disk of ${base.size} bytes in ${base.chunkSize}-byte chunks`,
      );
    }
    this.size = base.size;
    this.cs = base.chunkSize;
    this.zeros = Buffer.alloc(this.cs);
    this.blockSize = { minimum: 1, preferred: Math.min(this.cs, 65536), maximum: 32 << 20 };
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const segs = await this.readSparse(offset, length);
    if (segs.length === 1 && segs[0]!.data) return segs[0]!.data;
    const out = Buffer.alloc(length);
    for (const s of segs) s.data?.copy(out, s.offset - offset);
    return out;
  }

  async readSparse(offset: number, length: number): Promise<ReadSegment[]> {
    const end = offset + length;
    const groups = this.groups(offset, end);
    const parts = await Promise.all(groups.map((g) => this.readGroup(g, offset, end)));
    const out: ReadSegment[] = [];
    for (const part of parts) {
      for (const s of part) {
        const prev = out[out.length - 1];
        if (!s.data && prev && !prev.data) prev.length += s.length;
        else out.push(s);
      }
    }
    return out;
  }

  /** The bytes of one group's chunks clipped to [offset, end). */
  private async readGroup(g: Group, offset: number, end: number): Promise<ReadSegment[]> {
    const cs = this.cs;
    const from = Math.max(offset, g.first * cs);
    const to = Math.min(end, g.end * cs);
    if (g.state === 'zero') return [{ offset: from, length: to - from }];
    if (g.state === 'data') {
      const data = Buffer.allocUnsafe(to - from);
      await this.overlay.readAt(from, data);
      return [{ offset: from, length: to - from, data }];
    }
    const chunks = await this.base.chunks(g.first, g.end - g.first);
    return chunks.map((c, k) => {
      const cStart = (g.first + k) * cs;
      const a = Math.max(from, cStart);
      const b = Math.min(to, cStart + cs);
      return c
        ? { offset: a, length: b - a, data: c.subarray(a - cStart, b - cStart) }
        : { offset: a, length: b - a };
    });
  }

  async blockStatus(offset: number, length: number): Promise<AllocationExtent[]> {
    const end = Math.min(this.size, offset + Math.min(length, STATUS_SPAN));
    const out: AllocationExtent[] = [];
    const push = (e: Extent): void => {
      const prev = out[out.length - 1];
      if (prev && prev.data === e.data && prev.offset + prev.length === e.offset) prev.length += e.length;
      else out.push({ offset: e.offset, length: e.length, data: e.data });
    };
    for (const g of this.groups(offset, end)) {
      const from = Math.max(offset, g.first * this.cs);
      const to = Math.min(end, g.end * this.cs);
      if (g.state === 'base') for (const e of await this.base.extents(from, to - from)) push(e);
      else push({ offset: from, length: to - from, data: g.state === 'data' });
    }
    return out;
  }

  write(offset: number, data: Buffer): Promise<void> {
    return this.track(() => this.writeNow(offset, data));
  }

  private async writeNow(offset: number, data: Buffer): Promise<void> {
    const cs = this.cs;
    const end = offset + data.length;
    const first = Math.floor(offset / cs);
    const last = Math.floor((end - 1) / cs);
    const work: Promise<void>[] = [];
    let runFirst = -1; // first chunk of the current run of whole chunks
    const endRun = (upTo: number): void => {
      if (runFirst < 0) return;
      const a = runFirst;
      runFirst = -1;
      work.push(this.writeWhole(a, upTo, data.subarray(a * cs - offset, Math.min(end, upTo * cs) - offset)));
    };
    for (let i = first; i <= last; i++) {
      const cStart = i * cs;
      const cEnd = cStart + this.overlay.chunkLength(i);
      if (offset <= cStart && end >= cEnd) {
        if (runFirst < 0) runFirst = i;
        continue;
      }
      endRun(i);
      const a = Math.max(offset, cStart);
      const b = Math.min(end, cEnd);
      work.push(
        this.locks.with(i, () => this.writePart(i, a - cStart, data.subarray(a - offset, b - offset))),
      );
    }
    endRun(last + 1);
    await settleAll(work);
  }

  /** Writes whole chunks `first` … `end - 1` with one write, then sets their bits. */
  private async writeWhole(first: number, end: number, bytes: Buffer): Promise<void> {
    const release = await this.locks.lockRange(first, end);
    try {
      await this.overlay.writeAt(first * this.cs, bytes);
      for (let i = first; i < end; i++) this.overlay.markData(i);
    } finally {
      release();
    }
  }

  /** Writes `bytes` at `at` inside chunk `i` (caller holds the chunk's lock). */
  private async writePart(i: number, at: number, bytes: Buffer): Promise<void> {
    const state = this.overlay.state(i);
    if (state === 'data') {
      await this.overlay.writeAt(i * this.cs + at, bytes);
      return;
    }
    // Not in the data area yet: build the whole chunk, so the slot never holds stale bytes.
    const chunk = Buffer.alloc(this.overlay.chunkLength(i));
    if (state === 'base') (await this.base.chunk(i))?.copy(chunk);
    bytes.copy(chunk, at);
    await this.overlay.writeAt(i * this.cs, chunk);
    this.overlay.markData(i);
  }

  writeZeroes(offset: number, length: number, opts: { noHole: boolean }): Promise<void> {
    return this.track(() => this.zeroNow(offset, length, opts.noHole));
  }

  private async zeroNow(offset: number, length: number, noHole: boolean): Promise<void> {
    const cs = this.cs;
    const end = offset + length;
    const first = Math.floor(offset / cs);
    const last = Math.floor((end - 1) / cs);
    // Which chunks of the point are zero (the point never changes, so this cannot go stale).
    const baseZero = new Set<number>();
    for (const e of await this.base.extents(first * cs, Math.min(this.size, (last + 1) * cs) - first * cs)) {
      if (e.data) continue;
      const eEnd = e.offset + e.length;
      for (let i = Math.ceil(e.offset / cs); i < this.overlay.chunkCount; i++) {
        if (i * cs + this.overlay.chunkLength(i) > eEnd) break;
        baseZero.add(i);
      }
    }
    const work: Promise<void>[] = [];
    for (let i = first; i <= last; i++) {
      const cStart = i * cs;
      const len = this.overlay.chunkLength(i);
      const a = Math.max(offset, cStart);
      const b = Math.min(end, cStart + len);
      const whole = a === cStart && b === cStart + len;
      work.push(
        this.locks.with(i, async () => {
          const state = this.overlay.state(i);
          if (state === 'zero' && !noHole) return;
          if (state === 'base' && baseZero.has(i) && !noHole) return;
          if (whole && !noHole) {
            this.overlay.markZero(i);
            return;
          }
          if (whole) {
            await this.overlay.writeAt(cStart, this.zeros.subarray(0, len));
            this.overlay.markData(i);
            return;
          }
          await this.writePart(i, a - cStart, this.zeros.subarray(0, b - a));
        }),
      );
      // Bound the work in flight for huge ranges (WRITE_ZEROES may cover gigabytes).
      if (work.length >= 256) await settleAll(work.splice(0));
    }
    await settleAll(work);
  }

  /** Trim: the range reads as zeros afterwards (stronger than NBD requires). */
  trim(offset: number, length: number): Promise<void> {
    return this.writeZeroes(offset, length, { noHole: false });
  }

  flush(): Promise<void> {
    return this.overlay.flush();
  }

  /**
   * Stops accepting writes (later ones fail with ESHUTDOWN) and waits for those in flight, so
   * the overlay can be saved or closed with nothing changing under it. Call after the NBD
   * server stopped; reads still work.
   */
  async drain(): Promise<void> {
    this.stopped = true;
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
  }

  /** Runs a write-like operation, counted as in flight. */
  private track(op: () => Promise<void>): Promise<void> {
    if (this.stopped) {
      return Promise.reject(
        new VmvaultError('E_CLOSED', `overlay ${this.overlay.path} no longer accepts writes`, {
          details: { errno: 'ESHUTDOWN' },
        }),
      );
    }
    const p = op();
    this.inflight.add(p);
    const done = (): void => {
      this.inflight.delete(p);
    };
    p.then(done, done);
    return p;
  }

  /** Consecutive chunks of [offset, end) grouped by state. */
  private groups(offset: number, end: number): Group[] {
    const cs = this.cs;
    const out: Group[] = [];
    const last = Math.floor((end - 1) / cs);
    for (let i = Math.floor(offset / cs); i <= last; i++) {
      const state = this.overlay.state(i);
      const g = out[out.length - 1];
      if (g && g.state === state) g.end = i + 1;
      else out.push({ state, first: i, end: i + 1 });
    }
    return out;
  }
}

/** Waits for every promise, then throws the first failure (none is left unhandled). */
async function settleAll(work: Promise<void>[]): Promise<void> {
  const r = await Promise.allSettled(work);
  const failed = r.find((x): x is PromiseRejectedResult => x.status === 'rejected');
  if (failed) throw failed.reason;
}
