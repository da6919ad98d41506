/**
 * Random access to one disk of a restore point, as a {@link BlockReader}: reads touch only the
 * chunks they cover, decoded chunks are kept in a bounded LRU cache, and concurrent reads of
 * the same chunk share one fetch. This is what live mounts and file-level restore read through.
 *
 * Speed: the chunks one read needs are fetched as a batch, reading blobs that lie next to each
 * other in a pack with one backend read; with a {@link CodecPool} they are decoded and checked
 * on worker threads. Sequential streams (up to {@link MAX_STREAMS} at once, e.g. one per NBD
 * connection) are detected and the next chunks prefetched in the background: prefetch is
 * bounded in memory (it lands in the cache) and in batches in flight, and a read never waits
 * behind it (it is issued at once; it only shares a fetch already under way for its chunk).
 */
import type { BlockReader, Extent } from '../core/index.js';
import { SlabPool, VmvaultError } from '../core/index.js';
import { decodeItems, groupRuns, locateChunks, runBytes } from './pack-runs.js';
import {
  type CodecPool,
  type DiskRecord,
  fromHex,
  packObjectName,
  type Repository,
  type TreeReader,
} from '../repository/index.js';

/** Counters for what a reader fetched (tests and benchmarks check them). */
export interface PointReaderStats {
  chunkFetches: number;
  chunkBytesFetched: number;
  cacheHits: number;
  /** Chunks fetched by read-ahead (included in `chunkFetches`). */
  prefetched?: number;
  /** Backend reads made (one per run of adjacent blobs). */
  packReads?: number;
}

/** Options of {@link PointReader}. */
export interface PointReaderOptions {
  /** Bytes of decoded chunks to keep; default 64 MiB. */
  cacheBytes?: number;
  /**
   * Worker threads to decode and check chunks on. With a pool, adjacent blobs of a pack are
   * also read with one backend read. Without one, chunks are read and decoded one by one on
   * the calling thread.
   */
  pool?: CodecPool;
  /** Chunks to prefetch ahead of a sequential stream; default 4 MiB worth, 0 disables. */
  readAheadChunks?: number;
}

/** Sequential streams tracked at once. */
const MAX_STREAMS = 8;
/** Prefetch batches in flight at once. */
const MAX_PREFETCH_BATCHES = 4;
/** Largest single backend read of adjacent blobs. */
const MAX_RUN_BYTES = 4 << 20;

interface Deferred {
  promise: Promise<Buffer | null>;
  resolve: (b: Buffer | null) => void;
  reject: (e: unknown) => void;
}

interface Stream {
  /** Chunk a continuing read would start at. */
  next: number;
  /** Sequential reads seen. */
  hits: number;
  /** Chunks up to here (exclusive) have been prefetched. */
  prefetchedTo: number;
  used: number;
}

function deferred(): Deferred {
  let resolve!: (b: Buffer | null) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<Buffer | null>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A restore point's disk as a random-access block reader. */
export class PointReader implements BlockReader {
  readonly size: number;
  readonly chunkSize: number;
  readonly stats: PointReaderStats = {
    chunkFetches: 0,
    chunkBytesFetched: 0,
    cacheHits: 0,
    prefetched: 0,
    packReads: 0,
  };
  private readonly tree: TreeReader;
  private readonly cache = new Map<number, Buffer | null>();
  private readonly inflight = new Map<number, Promise<Buffer | null>>();
  private cachedBytes = 0;
  private readonly cacheLimit: number;
  private readonly pool: CodecPool | undefined;
  private readonly slabs: SlabPool;
  private readonly readAhead: number;
  private readonly chunkCount: number;
  private readonly streams: Stream[] = [];
  private prefetchBatches = 0;
  private clock = 0;

  constructor(
    private readonly repo: Repository,
    readonly disk: DiskRecord,
    opts: PointReaderOptions = {},
  ) {
    this.size = disk.size;
    this.chunkSize = disk.chunkSize;
    this.chunkCount = Math.ceil(disk.size / disk.chunkSize);
    this.tree = repo.treeReader(fromHex(disk.root), disk.size, disk.chunkSize);
    this.cacheLimit = opts.cacheBytes ?? 64 << 20;
    this.pool = opts.pool;
    this.slabs = new SlabPool(MAX_RUN_BYTES + disk.chunkSize + 4096, 8);
    // Read-ahead must fit in the cache several times over, or it would evict itself.
    const dflt = Math.max(4, Math.floor((4 << 20) / disk.chunkSize));
    this.readAhead = Math.max(
      0,
      Math.min(
        opts.readAheadChunks ?? dflt,
        Math.floor(this.cacheLimit / disk.chunkSize / (2 * MAX_STREAMS)),
      ),
    );
  }

  /** Decoded content of chunk `index`, or null for a zero chunk. */
  chunk(index: number): Promise<Buffer | null> {
    const got = this.cached(index);
    if (got) return got;
    this.fetch([index], false);
    return this.inflight.get(index)!;
  }

  /**
   * Chunks `first` … `first + count - 1` (null for zero chunks), fetched as one batch, and
   * noted as one access for sequential read-ahead.
   */
  chunks(first: number, count: number): Promise<(Buffer | null)[]> {
    const out: Promise<Buffer | null>[] = [];
    const missing: number[] = [];
    for (let i = first; i < first + count; i++) {
      const got = this.cached(i);
      if (got) out.push(got);
      else {
        missing.push(i);
        out.push(Promise.resolve(null)); // replaced below
      }
    }
    if (missing.length > 0) {
      this.fetch(missing, false);
      for (const i of missing) out[i - first] = this.inflight.get(i)!;
    }
    this.noteAccess(first, first + count);
    return Promise.all(out);
  }

  /** A cached or in-flight chunk, or undefined. */
  private cached(index: number): Promise<Buffer | null> | undefined {
    if (this.cache.has(index)) {
      const hit = this.cache.get(index)!;
      this.cache.delete(index);
      this.cache.set(index, hit);
      this.stats.cacheHits++;
      return Promise.resolve(hit);
    }
    return this.inflight.get(index);
  }

  /** Starts fetching `indices` (none cached or in flight) as one batch. */
  private fetch(indices: number[], prefetch: boolean): Promise<void> {
    const waits = new Map<number, Deferred>();
    for (const i of indices) {
      const d = deferred();
      // A prefetch nobody reads must not become an unhandled rejection.
      d.promise.catch(() => {});
      waits.set(i, d);
      this.inflight.set(i, d.promise);
    }
    const settle = (i: number, data: Buffer | null): void => {
      this.inflight.delete(i);
      this.insert(i, data);
      this.stats.chunkFetches += data ? 1 : 0;
      this.stats.chunkBytesFetched += data?.length ?? 0;
      if (prefetch && data) this.stats.prefetched = (this.stats.prefetched ?? 0) + 1;
      waits.get(i)!.resolve(data);
    };
    const run = async (): Promise<void> => {
      const wanted: { index: number; digest: Buffer }[] = [];
      for (const i of indices) {
        const digest = await this.tree.lookup(i);
        if (digest) wanted.push({ index: i, digest });
        else settle(i, null);
      }
      if (!this.pool) {
        await Promise.all(wanted.map(async (w) => settle(w.index, await this.repo.loadBlob(w.digest))));
        return;
      }
      await this.fetchRuns(wanted, settle, prefetch);
    };
    return run().catch((err: unknown) => {
      for (const [i, d] of waits) {
        if (this.inflight.get(i) === d.promise) this.inflight.delete(i);
        d.reject(err);
      }
    });
  }

  /** Reads `wanted` in runs of adjacent blobs and decodes them on the pool. */
  private async fetchRuns(
    wanted: { index: number; digest: Buffer }[],
    settle: (i: number, data: Buffer | null) => void,
    prefetch: boolean,
  ): Promise<void> {
    const pool = this.pool!;
    const runs = groupRuns(
      locateChunks(
        this.repo,
        wanted.map((w) => ({ index: w.index, digest: w.digest })),
      ),
      MAX_RUN_BYTES,
    );
    await Promise.all(
      runs.map(async (run) => {
        const first = run[0]!;
        const length = runBytes(run);
        // Read the run into a shared slab; the workers check and decode straight from it.
        const slab = await this.slabs.acquire();
        try {
          try {
            this.stats.packReads = (this.stats.packReads ?? 0) + 1;
            await this.repo.backend.readRangeInto(
              packObjectName(first.pack),
              first.offset,
              Buffer.from(slab.shared, 0, length),
            );
          } catch (err) {
            // Let the repository name the missing or truncated pack and chunk.
            await this.repo.readStored(first.digest);
            throw err;
          }
          // A guest read is split over every worker; prefetch uses one, leaving room for reads.
          const decoded = await pool.decodeRunSplit(
            slab.shared,
            decodeItems(run, () => -1),
            `pack ${first.pack}`,
            null,
            prefetch ? 1 : pool.size,
          );
          for (let n = 0; n < run.length; n++) settle(run[n]!.index, decoded[n]!);
        } finally {
          this.slabs.release(slab);
        }
      }),
    );
  }

  private insert(index: number, data: Buffer | null): void {
    const old = this.cache.get(index);
    if (old !== undefined) {
      this.cache.delete(index);
      this.cachedBytes -= old?.length ?? 0;
    }
    this.cache.set(index, data);
    this.cachedBytes += data?.length ?? 0;
    const maxEntries = Math.max(1024, Math.floor(this.cacheLimit / 1024));
    while ((this.cachedBytes > this.cacheLimit || this.cache.size > maxEntries) && this.cache.size > 1) {
      const [k, v] = this.cache.entries().next().value as [number, Buffer | null];
      this.cache.delete(k);
      this.cachedBytes -= v?.length ?? 0;
    }
  }

  /** Records an access to chunks [first, end) and prefetches ahead of sequential streams. */
  private noteAccess(first: number, end: number): void {
    if (this.readAhead === 0) return;
    this.clock++;
    // A read continuing a stream starts at (or a little before/after) where the last one ended.
    const slack = Math.max(2, this.readAhead >> 1);
    let s = this.streams.find((x) => first >= x.next - slack && first <= x.next + slack);
    if (!s) {
      if (this.streams.length >= MAX_STREAMS) {
        let lru = 0;
        for (let k = 1; k < this.streams.length; k++)
          if (this.streams[k]!.used < this.streams[lru]!.used) lru = k;
        this.streams.splice(lru, 1);
      }
      s = { next: end, hits: 0, prefetchedTo: end, used: this.clock };
      this.streams.push(s);
      return;
    }
    s.hits++;
    s.used = this.clock;
    s.next = Math.max(s.next, end);
    if (s.hits < 2) return;
    // Top up once less than half the window is left ahead of the reader.
    if (s.prefetchedTo - s.next > this.readAhead >> 1) return;
    if (this.prefetchBatches >= MAX_PREFETCH_BATCHES) return;
    const from = Math.max(s.prefetchedTo, s.next);
    const to = Math.min(this.chunkCount, s.next + this.readAhead);
    const todo: number[] = [];
    for (let i = from; i < to; i++) if (!this.cache.has(i) && !this.inflight.has(i)) todo.push(i);
    s.prefetchedTo = Math.max(s.prefetchedTo, to);
    if (todo.length === 0) return;
    this.prefetchBatches++;
    void this.fetch(todo, true).finally(() => {
      this.prefetchBatches--;
    });
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new VmvaultError(
        'E_USAGE',
        `read of ${length} bytes at ${offset} is outside the disk (${this.size} bytes)`,
      );
    }
    if (length === 0) return Buffer.alloc(0);
    const cs = this.chunkSize;
    const first = Math.floor(offset / cs);
    const last = Math.floor((offset + length - 1) / cs);
    const got = await this.chunks(first, last - first + 1);
    if (first === last) {
      // Inside one chunk (metadata reads mostly are): a view of the cached chunk, no copy.
      // Callers treat what read() returns as read-only.
      const c = got[0];
      const at = offset - first * cs;
      if (c && at + length <= c.length) return c.subarray(at, at + length);
    }
    const out = Buffer.alloc(length);
    for (let i = first; i <= last; i++) {
      const c = got[i - first];
      if (!c) continue;
      const cStart = i * cs;
      const from = Math.max(offset, cStart);
      const to = Math.min(offset + length, cStart + c.length);
      if (to > from) c.copy(out, from - offset, from - cStart, to - cStart);
    }
    return out;
  }

  /** Data and zero extents of [offset, offset+length), from the tree alone (no chunk reads). */
  async extents(offset: number, length: number): Promise<Extent[]> {
    const cs = this.chunkSize;
    const out: Extent[] = [];
    const end = Math.min(this.size, offset + length);
    for (let pos = offset; pos < end; ) {
      const i = Math.floor(pos / cs);
      const next = Math.min(end, (i + 1) * cs);
      const data = (await this.tree.lookup(i)) !== null;
      const prev = out[out.length - 1];
      if (prev && prev.data === data) prev.length += next - pos;
      else out.push({ offset: pos, length: next - pos, data });
      pos = next;
    }
    return out;
  }
}
