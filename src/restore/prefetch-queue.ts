/**
 * The queue of chunk ranges a {@link PointReader} prefetches: ranges by priority (lower first),
 * consumed from the front, with a count of the chunks still queued.
 */

/** A queued range `[next, end)`, consumed from the front. */
interface QueuedRange {
  next: number;
  end: number;
}

/** Ranges waiting to be prefetched, by priority. */
export class PrefetchQueue {
  private readonly byPriority = new Map<number, QueuedRange[]>();
  /** Chunks queued and not yet taken or dropped. */
  pending = 0;

  /** True when nothing is queued. */
  get empty(): boolean {
    return this.byPriority.size === 0;
  }

  /** Queues `[first, end)` ranges (already clipped; empty ones are skipped) at `priority`. */
  add(ranges: readonly [number, number][], priority: number): void {
    let list = this.byPriority.get(priority);
    for (const [first, end] of ranges) {
      if (!(end > first)) continue;
      if (!list) {
        list = [];
        this.byPriority.set(priority, list);
      }
      list.push({ next: first, end });
      this.pending += end - first;
    }
  }

  /** Drops everything queued. */
  clear(): void {
    this.byPriority.clear();
    this.pending = 0;
  }

  /**
   * Up to `max` chunks from the front, in priority and then queue order, for which `want`
   * says yes. Consumes every chunk it looks at, wanted or not.
   */
  take(max: number, want: (index: number) => boolean): number[] {
    const out: number[] = [];
    const priorities = [...this.byPriority.keys()].sort((a, b) => a - b);
    for (const pr of priorities) {
      const list = this.byPriority.get(pr)!;
      while (list.length > 0 && out.length < max) {
        const r = list[0]!;
        while (r.next < r.end && out.length < max) {
          const i = r.next++;
          this.pending--;
          if (want(i)) out.push(i);
        }
        if (r.next >= r.end) list.shift();
        else break;
      }
      if (list.length === 0) this.byPriority.delete(pr);
      if (out.length >= max || list.length > 0) break;
    }
    return out;
  }

  /**
   * Drops the oldest ranges of `priority` until `incoming` more chunks fit in `cap` (read-ahead
   * that fell behind its stream is worthless).
   */
  trim(priority: number, cap: number, incoming: number): void {
    const list = this.byPriority.get(priority);
    if (!list) return;
    let queued = 0;
    for (const r of list) queued += r.end - r.next;
    while (list.length > 0 && queued + incoming > cap) {
      const old = list.shift()!;
      queued -= old.end - old.next;
      this.pending -= old.end - old.next;
    }
  }
}
