/**
 * Sequential-stream detection for a {@link PointReader}: which reads continue one another, and
 * which chunks to read ahead of each stream.
 */

/** Sequential streams tracked at once. */
export const MAX_STREAMS = 8;

interface Stream {
  /** Chunk a continuing read would start at. */
  next: number;
  /** Sequential reads seen. */
  hits: number;
  /** Chunks up to here (exclusive) have been queued for read-ahead. */
  prefetchedTo: number;
  used: number;
}

/** Tracks up to {@link MAX_STREAMS} streams (least recently used dropped first). */
export class ReadAhead {
  private readonly streams: Stream[] = [];
  private clock = 0;

  /** @param window chunks to keep read ahead of a stream (> 0); `chunkCount` bounds them. */
  constructor(
    readonly window: number,
    private readonly chunkCount: number,
  ) {}

  /**
   * Records an access to chunks `[first, end)`; returns the range to queue for read-ahead, or
   * null. A stream earns read-ahead after two continuing reads, topped up once less than half
   * the window is left ahead of the reader.
   */
  access(first: number, end: number): [number, number] | null {
    this.clock++;
    // A read continuing a stream starts at (or a little before/after) where the last one ended.
    const slack = Math.max(2, this.window >> 1);
    const s = this.streams.find((x) => first >= x.next - slack && first <= x.next + slack);
    if (!s) {
      if (this.streams.length >= MAX_STREAMS) {
        let lru = 0;
        for (let k = 1; k < this.streams.length; k++)
          if (this.streams[k]!.used < this.streams[lru]!.used) lru = k;
        this.streams.splice(lru, 1);
      }
      this.streams.push({ next: end, hits: 0, prefetchedTo: end, used: this.clock });
      return null;
    }
    s.hits++;
    s.used = this.clock;
    s.next = Math.max(s.next, end);
    if (s.hits < 2) return null;
    if (s.prefetchedTo - s.next > this.window >> 1) return null;
    const from = Math.max(s.prefetchedTo, s.next);
    const to = Math.min(this.chunkCount, s.next + this.window);
    s.prefetchedTo = Math.max(s.prefetchedTo, to);
    return to > from ? [from, to] : null;
  }
}
