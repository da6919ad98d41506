/**
 * One mutex per chunk, created on demand: every write to a chunk of an overlay runs under its
 * chunk's lock, so a read-modify-write never interleaves with another write to the same chunk.
 * Callers that need several chunks take them in ascending order, which rules out deadlocks.
 */

/** Releases a lock taken with {@link ChunkLocks.lock}. */
export type Release = () => void;

/** Per-chunk mutexes. */
export class ChunkLocks {
  /** Chunk → the promise the next taker must wait for. Absent when nobody holds the lock. */
  private readonly tails = new Map<number, Promise<void>>();

  /** Waits for chunk `i`'s lock and returns its release function. */
  async lock(i: number): Promise<Release> {
    const prev = this.tails.get(i);
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    const tail = prev ? prev.then(() => held) : held;
    this.tails.set(i, tail);
    if (prev) await prev;
    return () => {
      if (this.tails.get(i) === tail) this.tails.delete(i);
      release();
    };
  }

  /** Takes the locks of chunks `first` … `end - 1` in order; one release drops them all. */
  async lockRange(first: number, end: number): Promise<Release> {
    const held: Release[] = [];
    for (let i = first; i < end; i++) held.push(await this.lock(i));
    return () => {
      for (const r of held) r();
    };
  }

  /** Runs `fn` holding chunk `i`'s lock. */
  async with<T>(i: number, fn: () => Promise<T>): Promise<T> {
    const release = await this.lock(i);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /** Number of chunks locked or waited for (tests). */
  get size(): number {
    return this.tails.size;
  }
}
