/**
 * A fixed set of shared buffers ("slabs") that pipelines read into and worker threads read
 * from without copies. Each slab is reference-counted: the reader holds one reference and each
 * piece of work handed to a worker another; the slab returns to the pool at zero. A fixed count
 * bounds memory and the work in flight.
 */

/** One shared buffer and its reference count. */
export interface Slab {
  readonly shared: SharedArrayBuffer;
  refs: number;
}

/** A pool of equally sized shared buffers. */
export class SlabPool {
  private readonly free: Slab[] = [];
  private readonly waiters: ((s: Slab) => void)[] = [];

  constructor(
    readonly slabBytes: number,
    count: number,
  ) {
    for (let i = 0; i < count; i++) this.free.push({ shared: new SharedArrayBuffer(slabBytes), refs: 0 });
  }

  /** A free slab with one reference, waiting for one when all are in use. */
  acquire(): Promise<Slab> {
    const s = this.free.pop();
    if (s) {
      s.refs = 1;
      return Promise.resolve(s);
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Adds a reference. */
  retain(s: Slab): void {
    s.refs++;
  }

  /** Drops a reference; the last one returns the slab to the pool. */
  release(s: Slab): void {
    if (--s.refs > 0) return;
    const w = this.waiters.shift();
    if (w) {
      s.refs = 1;
      w(s);
    } else this.free.push(s);
  }
}
