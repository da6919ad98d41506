/**
 * A restore point's disk served as a read-only NBD export: reads go through a
 * {@link PointReader} (chunk cache, shared fetches), zero chunks are sent as holes, and
 * `base:allocation` comes from the restore-point tree without reading any chunk.
 */
import type { AllocationExtent, HeldSegments, NbdExport, ReadSegment } from '../protocols/nbd/index.js';
import type { PointReader } from './point-reader.js';

/** Largest range one BLOCK_STATUS answer covers; the client asks again for the rest. */
const STATUS_SPAN = 1 << 30;

/** Read-only {@link NbdExport} over a {@link PointReader}. */
export class PointExport implements NbdExport {
  readonly readOnly = true;
  readonly multiConn = true;
  readonly size: number;
  readonly blockSize;

  constructor(
    private readonly reader: PointReader,
    readonly description: string,
  ) {
    this.size = reader.size;
    this.blockSize = { minimum: 1, preferred: Math.min(reader.chunkSize, 65536), maximum: 32 << 20 };
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.reader.read(offset, length);
  }

  async readSparse(offset: number, length: number): Promise<ReadSegment[]> {
    const cs = this.reader.chunkSize;
    const first = Math.floor(offset / cs);
    const last = Math.floor((offset + length - 1) / cs);
    return segmentsOf(await this.reader.chunks(first, last - first + 1), first, cs, offset, length);
  }

  /** {@link readSparse} with the cache's own buffers, lent until the server releases them. */
  async readSparseHeld(offset: number, length: number): Promise<HeldSegments> {
    const cs = this.reader.chunkSize;
    const first = Math.floor(offset / cs);
    const last = Math.floor((offset + length - 1) / cs);
    const lent = await this.reader.borrow(first, last - first + 1);
    return { segments: segmentsOf(lent.chunks, first, cs, offset, length), release: lent.release };
  }

  blockStatus(offset: number, length: number): Promise<AllocationExtent[]> {
    return this.reader.extents(offset, Math.min(length, STATUS_SPAN));
  }
}

/**
 * The segments of [offset, offset+length) given the chunks from `first` on: data views of the
 * chunks, and zero chunks merged into holes.
 */
function segmentsOf(
  chunks: readonly (Buffer | null)[],
  first: number,
  cs: number,
  offset: number,
  length: number,
): ReadSegment[] {
  const end = offset + length;
  const out: ReadSegment[] = [];
  for (let k = 0; k < chunks.length; k++) {
    const cStart = (first + k) * cs;
    const from = Math.max(offset, cStart);
    const to = Math.min(end, cStart + cs);
    const c = chunks[k];
    const prev = out[out.length - 1];
    if (!c) {
      if (prev && prev.data === undefined) prev.length += to - from;
      else out.push({ offset: from, length: to - from });
    } else {
      out.push({ offset: from, length: to - from, data: c.subarray(from - cStart, to - cStart) });
    }
  }
  return out;
}
