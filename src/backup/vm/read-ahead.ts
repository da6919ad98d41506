/**
 * Read-ahead for a source whose reads can be predicted: the backup pipeline reads each data
 * extent in segments of at most `segmentSize` bytes, in order, one segment ahead. Over NBD a
 * segment per round trip leaves the link idle, and an incremental made of scattered 64 KiB
 * chunks is all round trips. This keeps up to `maxBytes` of the predicted reads in flight and
 * hands them out when the pipeline asks; any read that was not predicted goes straight through.
 */
import type { SourceExtent } from '../../sources/index.js';

/** A read the pipeline is expected to make. */
interface Planned {
  offset: number;
  length: number;
  data?: Promise<Buffer>;
}

/** Predicts and prefetches the reads of the backup pipeline over `read`. */
export class ReadAhead {
  private planned: Planned[] = [];
  private next = 0;
  private started = 0;
  private inFlightBytes = 0;

  constructor(
    private readonly read: (offset: number, length: number) => Promise<Buffer>,
    private readonly chunkSize: number,
    private readonly segmentSize = 4 << 20,
    private readonly maxBytes = 32 << 20,
  ) {}

  /** Plans reads for the extents the pipeline will read (data, not unchanged), as it cuts them. */
  plan(extents: readonly SourceExtent[], size: number): void {
    const cs = this.chunkSize;
    const seg = Math.max(cs, Math.floor(this.segmentSize / cs) * cs);
    const runs: [number, number][] = [];
    for (const e of extents) {
      if (!e.data || e.unchanged || e.length <= 0) continue;
      const a = Math.floor(e.offset / cs);
      const b = Math.ceil((e.offset + e.length) / cs);
      const last = runs[runs.length - 1];
      if (last && a <= last[1]) last[1] = Math.max(last[1], b);
      else runs.push([a, b]);
    }
    for (const [a, b] of runs) {
      for (let off = a * cs; off < Math.min(b * cs, size); off += seg) {
        this.planned.push({ offset: off, length: Math.min(seg, b * cs - off, size - off) });
      }
    }
    this.pump();
  }

  private pump(): void {
    while (
      this.started < this.planned.length &&
      (this.inFlightBytes < this.maxBytes || this.started === this.next)
    ) {
      const p = this.planned[this.started++]!;
      this.inFlightBytes += p.length;
      p.data = this.read(p.offset, p.length);
      p.data.catch(() => undefined); // surfaced when taken
    }
  }

  /** Fills `buf` from `offset`: from the prefetched read when it was predicted, else directly. */
  async readInto(buf: Buffer, offset: number): Promise<void> {
    while (this.next < this.planned.length && this.planned[this.next]!.offset < offset)
      this.release(this.next++);
    const p = this.planned[this.next];
    if (p && p.offset === offset && p.length === buf.length) {
      this.next++;
      this.pump();
      try {
        const data = await p.data!;
        data.copy(buf);
      } finally {
        this.release(-1, p);
      }
      return;
    }
    (await this.read(offset, buf.length)).copy(buf);
  }

  private release(i: number, p: Planned | undefined = this.planned[i]): void {
    if (!p?.data) return;
    this.inFlightBytes -= p.length;
    p.data = undefined;
    this.pump();
  }
}
