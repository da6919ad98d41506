/**
 * Random access to one disk of a restore point, as a {@link BlockReader}: reads touch only the
 * chunks they cover, decoded chunks are kept in a bounded LRU cache, and concurrent reads of
 * the same chunk share one fetch. This is what live mounts and file-level restore read through.
 *
 * Speed: the chunks that reads ask for within one turn of the event loop (e.g. every request of
 * one NBD packet) are fetched as one batch, reading blobs that lie next to each other in a pack
 * with one backend read; while the workers are busy, reads that arrive wait for a batch to
 * finish and go with the next one (fewer, larger messages under load). With a
 * {@link CodecPool} they are decoded and checked on worker threads straight into reusable
 * shared memory (a {@link ChunkArena}), which {@link PointReader.borrow} hands out without a
 * copy; self-checked blobs (format version 2 and later) are not re-hashed.
 *
 * Prefetch: {@link PointReader.prefetch} queues chunk ranges by priority (lower first), and
 * sequential streams (up to {@link MAX_STREAMS} at once, e.g. one per NBD connection) queue
 * their read-ahead behind every explicit priority. The queue is pumped in the background in
 * small batches on one worker each, only while no guest read waits (at most one batch while one
 * does), and only while prefetched chunks nobody read yet fill less than half the cache. A read
 * never waits behind prefetch: it is issued at once and only shares a fetch already under way.
 */
import type { BlockReader, Extent } from '../core/index.js';
import { copyBytes, VmvaultError } from '../core/index.js';
import {
  type CodecPool,
  type DiskRecord,
  fromHex,
  PAGE_FANOUT,
  type Repository,
} from '../repository/index.js';
import { ChunkArena } from './chunk-arena.js';
import { groupRuns, type LocatedChunk, locateChunks } from './pack-runs.js';
import { PrefetchQueue } from './prefetch-queue.js';
import { MAX_RUN_BYTES, RunFetcher } from './run-fetcher.js';
import { MAX_STREAMS, ReadAhead } from './read-ahead.js';
import {
  type BorrowedChunks,
  type Entry,
  type Pending,
  type PointReaderOptions,
  type PointReaderStats,
  ZERO_ENTRY,
} from './point-reader-types.js';
import { LeafCache } from './leaf-cache.js';

export { MAX_STREAMS };
export type { BorrowedChunks, PointReaderOptions, PointReaderStats };

/** Priority of sequential read-ahead: after every explicit {@link PointReader.prefetch} priority. */
export const READ_AHEAD_PRIORITY = Number.POSITIVE_INFINITY;
/** Prefetch batches in flight at once while no guest read waits (one while one does). */
const MAX_PREFETCH_BATCHES = 2;
/** Bytes of chunks one prefetch batch covers. */
const PREFETCH_BATCH_BYTES = 4 << 20;
/** Worker messages in flight, per worker, beyond which guest reads wait to go as one batch. */
const GUEST_QUEUE_DEPTH = 2;

/** A restore point's disk as a random-access block reader. */
export class PointReader implements BlockReader {
  readonly size: number;
  readonly chunkSize: number;
  readonly stats: PointReaderStats = {
    chunkFetches: 0,
    chunkBytesFetched: 0,
    cacheHits: 0,
    prefetched: 0,
    prefetchQueued: 0,
    packReads: 0,
  };
  /** Decoded leaf pages by leaf number (chunk digests), and leaves being loaded. */
  private readonly leaves: LeafCache;
  private readonly cache = new Map<number, Entry>();
  private readonly inflight = new Map<number, Pending>();
  private cachedBytes = 0;
  private readonly cacheLimit: number;
  /** Most cached entries (zero chunks included), so a cache of holes stays small too. */
  private readonly maxEntries: number;
  /** Chunks the cache holds: the arena size, and the unit of the prefetch budget. */
  private readonly cacheChunks: number;
  private readonly pool: CodecPool | undefined;
  private readonly arena: ChunkArena | null;
  /** Reads and decodes runs of blobs on the pool (with a pool). */
  private readonly runs: RunFetcher | null;
  /** Sequential-stream tracking; null when read-ahead is off. */
  private readonly readAhead: ReadAhead | null;
  private readonly chunkCount: number;
  /** Guest chunk requests waiting for the next batch (flushed in a microtask). */
  private guestBatch: number[] = [];
  /** Guest chunks waiting: in {@link guestBatch} or in flight. */
  private guestPending = 0;
  /** Guest batches being fetched, and whether a flush of {@link guestBatch} is queued. */
  private guestBatches = 0;
  private flushQueued = false;
  /** Prefetch queue: priority → ranges in the order given. */
  private readonly queue = new PrefetchQueue();
  private prefetchBatches = 0;
  /** Chunks of prefetch batches in flight. */
  private prefetchInFlight = 0;
  /** Cached chunks fetched by prefetch that no read used yet. */
  private prefetchResident = 0;
  private pumpScheduled = false;

  constructor(
    private readonly repo: Repository,
    readonly disk: DiskRecord,
    opts: PointReaderOptions = {},
  ) {
    this.size = disk.size;
    this.chunkSize = disk.chunkSize;
    this.chunkCount = Math.ceil(disk.size / disk.chunkSize);
    this.leaves = new LeafCache(repo.treeReader(fromHex(disk.root), disk.size, disk.chunkSize));
    this.cacheLimit = opts.cacheBytes ?? 64 << 20;
    this.maxEntries = Math.max(1024, Math.floor(this.cacheLimit / 1024));
    this.cacheChunks = Math.max(4, Math.floor(this.cacheLimit / disk.chunkSize));
    this.pool = opts.pool;
    this.arena = this.pool ? new ChunkArena(disk.chunkSize, this.cacheChunks) : null;
    this.runs =
      this.pool && this.arena
        ? new RunFetcher(repo, this.pool, this.arena, disk.chunkSize, this.stats, {
            settle: (i, e, p) => this.settle(i, e, p),
            fail: (i, err, p) => this.fail(i, err, p),
            takeSlot: () => this.takeSlot(),
          })
        : null;
    // Read-ahead must fit in the cache several times over, or it would evict itself.
    const dflt = Math.max(4, Math.floor((4 << 20) / disk.chunkSize));
    const window = Math.max(
      0,
      Math.min(opts.readAheadChunks ?? dflt, Math.floor(this.cacheChunks / (2 * MAX_STREAMS))),
    );
    this.readAhead = window > 0 ? new ReadAhead(window, this.chunkCount) : null;
  }

  // ---- reading -----------------------------------------------------------------------------

  /** Decoded content of chunk `index`, or null for a zero chunk. */
  async chunk(index: number): Promise<Buffer | null> {
    return (await this.copies(index, 1, false))[0]!;
  }

  /**
   * Chunks `first` … `first + count - 1` (null for zero chunks), fetched as one batch, and
   * noted as one access for sequential read-ahead. The buffers are the caller's to keep.
   */
  chunks(first: number, count: number): Promise<(Buffer | null)[]> {
    return this.copies(first, count, true);
  }

  /**
   * Like {@link chunks}, without copying: the buffers are views of the cache, valid until
   * `release()` (the reader does not reuse their memory before). For senders that hand the
   * bytes to a socket and can tell when it is done with them.
   */
  async borrow(first: number, count: number): Promise<BorrowedChunks> {
    this.checkRange(first, count);
    const entries = await this.request(first, count, true);
    let released = false;
    return {
      chunks: entries.map((e) => e.data),
      release: () => {
        if (released) return;
        released = true;
        this.unpin(entries);
      },
    };
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
    const got = await this.request(first, last - first + 1, true, true);
    try {
      if (first === last) {
        // Inside one chunk (metadata reads mostly are): a heap-cached chunk is returned as a
        // view, no copy. Callers treat what read() returns as read-only.
        const c = got[0]!;
        const at = offset - first * cs;
        if (c.data && c.slot < 0 && at + length <= c.data.length) return c.data.subarray(at, at + length);
      }
      const out = Buffer.alloc(length);
      for (let i = first; i <= last; i++) {
        const c = got[i - first]!.data;
        if (!c) continue;
        const cStart = i * cs;
        const from = Math.max(offset, cStart);
        const to = Math.min(offset + length, cStart + c.length);
        if (to > from) copyBytes(out, from - offset, c.subarray(from - cStart, to - cStart));
      }
      return out;
    } finally {
      this.unpin(got);
    }
  }

  /** Data and zero extents of [offset, offset+length), from the tree alone (no chunk reads). */
  async extents(offset: number, length: number): Promise<Extent[]> {
    const cs = this.chunkSize;
    const out: Extent[] = [];
    const end = Math.min(this.size, offset + length);
    let leafNo = -1;
    let leaf: readonly (Buffer | null)[] = [];
    for (let pos = offset; pos < end; ) {
      const i = Math.floor(pos / cs);
      const next = Math.min(end, (i + 1) * cs);
      if (Math.floor(i / PAGE_FANOUT) !== leafNo) {
        leafNo = Math.floor(i / PAGE_FANOUT);
        leaf = await this.leaves.leaf(leafNo);
      }
      const data = (leaf[i - leafNo * PAGE_FANOUT] ?? null) !== null;
      const prev = out[out.length - 1];
      if (prev && prev.data === data) prev.length += next - pos;
      else out.push({ offset: pos, length: next - pos, data });
      pos = next;
    }
    return out;
  }

  private checkRange(first: number, count: number): void {
    if (
      !Number.isInteger(first) ||
      !Number.isInteger(count) ||
      first < 0 ||
      count < 0 ||
      first + count > this.chunkCount
    ) {
      throw new VmvaultError(
        'E_USAGE',
        `chunks ${first}+${count} are outside the disk (${this.chunkCount} chunks)`,
      );
    }
  }

  /** Chunks as buffers of their own (arena-backed ones copied). */
  private async copies(first: number, count: number, noteAccess: boolean): Promise<(Buffer | null)[]> {
    this.checkRange(first, count);
    const entries = await this.request(first, count, true, noteAccess);
    try {
      return entries.map((e) => {
        if (!e.data || e.slot < 0) return e.data;
        // Out of the shared arena: a memmove, not V8's copy of shared memory.
        const own = Buffer.allocUnsafe(e.data.length);
        copyBytes(own, 0, e.data);
        return own;
      });
    } finally {
      this.unpin(entries);
    }
  }

  /**
   * Entries for chunks [first, first + count), fetching what is missing. With `pin`, every
   * arena-backed entry returned holds a slot reference the caller must {@link unpin}; the pins
   * are taken now, so nothing can reuse the memory between the fetch and the caller.
   */
  private request(first: number, count: number, pin: boolean, noteAccess = true): Promise<Entry[]> {
    const out: Entry[] = new Array(count);
    const missing: number[] = [];
    for (let k = 0; k < count; k++) {
      const i = first + k;
      const hit = this.cache.get(i);
      if (hit) {
        // Most recently used: move to the end of the LRU order.
        this.cache.delete(i);
        this.cache.set(i, hit);
        this.stats.cacheHits++;
        this.markRead(hit);
        if (pin && hit.slot >= 0) this.arena!.retain(hit.slot);
        out[k] = hit;
        continue;
      }
      missing.push(k);
    }
    if (noteAccess) this.noteAccess(first, first + count);
    if (missing.length === 0) return Promise.resolve(out);
    return new Promise<Entry[]>((resolve, reject) => {
      let left = missing.length;
      let failed = false;
      let error: unknown;
      for (const k of missing) {
        const i = first + k;
        let p = this.inflight.get(i);
        if (!p) {
          p = this.pend(i, false);
          this.guestBatch.push(i);
          this.guestPending++;
          if (!this.flushQueued) {
            this.flushQueued = true;
            queueMicrotask(() => this.flushGuest());
          }
        }
        if (pin) p.pins++;
        p.prefetch = false;
        p.waiters.push((e, err) => {
          if (e) out[k] = e;
          else if (!failed) {
            failed = true;
            error = err;
          }
          if (--left > 0) return;
          if (!failed) return resolve(out);
          // Give back the pins of the chunks that did arrive.
          if (pin) this.unpin(out.filter((x) => x !== undefined));
          reject(error);
        });
      }
    });
  }

  /** Drops the slot references {@link request} took for `entries`. */
  private unpin(entries: readonly Entry[]): void {
    for (const e of entries) if (e.slot >= 0) this.arena!.release(e.slot);
  }

  private markRead(e: Entry): void {
    if (e.prefetched) {
      e.prefetched = false;
      this.prefetchResident--;
      this.schedulePump();
    }
  }

  // ---- fetching ----------------------------------------------------------------------------

  /** Registers chunk `index` as in flight. */
  private pend(index: number, prefetch: boolean): Pending {
    const p: Pending = { waiters: [], pins: 0, prefetch };
    this.inflight.set(index, p);
    return p;
  }

  /** Digest of chunk `index` (null for a zero chunk), from the decoded leaf pages. */
  private digest(index: number): Buffer | null | Promise<Buffer | null> {
    return this.leaves.digest(index);
  }

  /**
   * Sends the waiting guest chunks as one batch, unless the workers already have
   * {@link GUEST_QUEUE_DEPTH} messages each to work on while a guest batch is out: then the
   * chunks wait for that batch to finish and go with the ones that arrive meanwhile. An idle
   * reader sends a read at once; a loaded one sends fewer, larger messages.
   */
  private flushGuest(): void {
    this.flushQueued = false;
    if (this.guestBatch.length === 0) return;
    if (this.pool && this.guestBatches > 0 && this.pool.inFlight >= GUEST_QUEUE_DEPTH * this.pool.size)
      return;
    const batch = this.guestBatch;
    this.guestBatch = [];
    this.guestBatches++;
    void this.fetch(batch, false).finally(() => {
      this.guestBatches--;
      this.flushGuest();
    });
  }

  /** A fetched chunk lands: it is cached, its waiters get their pins, and they resume. */
  private settle(index: number, entry: Entry, prefetch: boolean): void {
    const p = this.inflight.get(index)!;
    this.inflight.delete(index);
    if (prefetch) this.prefetchInFlight--;
    else this.guestDone(1);
    if (entry.data) {
      this.stats.chunkFetches++;
      this.stats.chunkBytesFetched += entry.data.length;
      if (prefetch) this.stats.prefetched = (this.stats.prefetched ?? 0) + 1;
    }
    entry.prefetched = prefetch && p.prefetch && entry.data !== null;
    if (entry.prefetched) this.prefetchResident++;
    if (entry.slot >= 0) for (let n = 0; n < p.pins; n++) this.arena!.retain(entry.slot);
    this.insert(index, entry);
    for (const w of p.waiters) w(entry);
  }

  /** A chunk could not be fetched: its waiters get the error; nothing is cached. */
  private fail(index: number, err: unknown, prefetch: boolean): void {
    const p = this.inflight.get(index);
    if (!p) return;
    this.inflight.delete(index);
    if (prefetch) this.prefetchInFlight--;
    else this.guestDone(1);
    for (const w of p.waiters) w(null, err);
  }

  private guestDone(n: number): void {
    this.guestPending -= n;
    if (this.guestPending === 0) this.schedulePump();
  }

  /** Fetches `indices` (registered in flight) as one batch; settles or fails each of them. */
  private async fetch(indices: number[], prefetch: boolean): Promise<void> {
    const mine = indices.map((i) => this.inflight.get(i));
    try {
      await this.fetchBatch(indices, prefetch);
    } catch (err) {
      for (let k = 0; k < indices.length; k++)
        if (this.inflight.get(indices[k]!) === mine[k]) this.fail(indices[k]!, err, prefetch);
    }
    // Nothing may stay in flight forever, whatever went wrong.
    for (let k = 0; k < indices.length; k++) {
      if (this.inflight.get(indices[k]!) === mine[k]) {
        this.fail(
          indices[k]!,
          new VmvaultError('E_INTERNAL', `chunk ${indices[k]} was not fetched`),
          prefetch,
        );
      }
    }
  }

  private async fetchBatch(indices: number[], prefetch: boolean): Promise<void> {
    const wanted: { index: number; digest: Buffer }[] = [];
    for (const i of indices) {
      try {
        const d = this.digest(i);
        const digest = d instanceof Promise ? await d : d;
        if (digest) wanted.push({ index: i, digest });
        else this.settle(i, { ...ZERO_ENTRY }, prefetch);
      } catch (err) {
        this.fail(i, err, prefetch);
      }
    }
    if (wanted.length === 0) return;
    if (!this.pool) {
      await Promise.all(
        wanted.map(async (w) => {
          try {
            const data = await this.repo.loadBlob(w.digest, { trustSelfCheck: true });
            this.settle(w.index, { data, slot: -1, prefetched: false }, prefetch);
          } catch (err) {
            this.fail(w.index, err, prefetch);
          }
        }),
      );
      return;
    }
    const located: LocatedChunk[] = [];
    for (const w of wanted) {
      try {
        located.push(...locateChunks(this.repo, [w]));
      } catch (err) {
        this.fail(w.index, err, prefetch);
      }
    }
    const runs = groupRuns(located, MAX_RUN_BYTES);
    const fetcher = this.runs!;
    if (prefetch) {
      // One run after the other, one message each: a prefetch batch keeps at most one worker
      // busy, leaving the others to guest reads.
      for (const run of runs) await fetcher.fetchRun(run, 1, true);
      return;
    }
    // A guest batch is spread over every worker.
    const parts = Math.max(1, Math.ceil(this.pool.size / runs.length));
    await Promise.all(runs.map((run) => fetcher.fetchRun(run, parts, false)));
  }

  /** A free arena slot (evicting cached chunks as needed), or -1. */
  private takeSlot(): number {
    const arena = this.arena!;
    if (arena.freeSlots === 0 && arena.capacity >= arena.maxSlots) {
      // Evict from the LRU end until a slot frees; pinned chunks leave the cache but keep
      // their slot until released.
      for (const [k] of this.cache) {
        const wasFree = arena.freeSlots;
        this.evict(k);
        if (arena.freeSlots > wasFree) break;
      }
    }
    return arena.take();
  }

  private insert(index: number, entry: Entry): void {
    if (this.cache.has(index)) this.evict(index);
    this.cache.set(index, entry);
    this.cachedBytes += entry.data?.length ?? 0;
    while ((this.cachedBytes > this.cacheLimit || this.cache.size > this.maxEntries) && this.cache.size > 1) {
      this.evict(this.cache.keys().next().value as number);
    }
  }

  private evict(index: number): void {
    const e = this.cache.get(index);
    if (!e) return;
    this.cache.delete(index);
    this.cachedBytes -= e.data?.length ?? 0;
    if (e.prefetched) {
      e.prefetched = false;
      this.prefetchResident--;
      this.schedulePump();
    }
    if (e.slot >= 0) this.arena!.release(e.slot);
  }

  // ---- prefetch ----------------------------------------------------------------------------

  /**
   * Queues chunk ranges `[first, end)` to fetch into the cache in the background. Lower
   * `priority` numbers go first (e.g. 0 for block priorities recorded at backup, 1 for a
   * recorded boot trace); within a priority, ranges and chunks keep the given order. Sequential
   * read-ahead comes after every priority. Chunks already cached or in flight, and zero chunks,
   * are skipped. Ranges are clipped to the disk.
   *
   * Prefetch never delays a read: batches of up to 4 MiB start only while no guest read waits
   * (at most one while one does), at most two at once, each on one worker; and pumping stops
   * while prefetched chunks that nobody read yet would fill more than half the cache.
   */
  prefetch(ranges: readonly [number, number][], priority = 0): void {
    if (Number.isNaN(priority)) throw new VmvaultError('E_USAGE', 'prefetch priority must be a number');
    this.queue.add(
      ranges.map(([a, b]) => [Math.max(0, Math.floor(a)), Math.min(this.chunkCount, Math.ceil(b))]),
      priority,
    );
    this.stats.prefetchQueued = this.queue.pending;
    this.schedulePump();
  }

  /** Drops everything queued for prefetch (including read-ahead); batches in flight finish. */
  clearPrefetch(): void {
    this.queue.clear();
    this.stats.prefetchQueued = 0;
  }

  private schedulePump(): void {
    if (this.pumpScheduled || this.queue.empty) return;
    this.pumpScheduled = true;
    queueMicrotask(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  /** Starts prefetch batches while the rules allow. */
  private pump(): void {
    const perBatch = Math.max(1, Math.floor(PREFETCH_BATCH_BYTES / this.chunkSize));
    while (!this.queue.empty) {
      const limit = this.guestPending > 0 ? 1 : MAX_PREFETCH_BATCHES;
      if (this.prefetchBatches >= limit) return;
      const budget = Math.floor(this.cacheChunks / 2) - this.prefetchResident - this.prefetchInFlight;
      if (budget <= 0) return;
      const batch = this.takeQueued(Math.min(perBatch, budget));
      if (batch.length === 0) continue; // everything taken was cached or in flight
      this.prefetchBatches++;
      this.prefetchInFlight += batch.length;
      void this.fetch(batch, true).finally(() => {
        this.prefetchBatches--;
        this.schedulePump();
      });
    }
  }

  /**
   * Up to `max` queued chunks that are neither cached nor in flight, in priority and then queue
   * order, registered as in flight. Consumes what it looks at.
   */
  private takeQueued(max: number): number[] {
    const out = this.queue.take(max, (i) => {
      if (this.cache.has(i) || this.inflight.has(i)) return false;
      this.pend(i, true); // at once: the same chunk queued twice is taken once
      return true;
    });
    this.stats.prefetchQueued = this.queue.pending;
    return out;
  }

  /** Records an access to chunks [first, end) and queues read-ahead for sequential streams. */
  private noteAccess(first: number, end: number): void {
    const range = this.readAhead?.access(first, end);
    if (!range) return;
    // Read-ahead that fell behind its stream is worthless: keep the queue to a few windows.
    this.queue.trim(READ_AHEAD_PRIORITY, MAX_STREAMS * this.readAhead!.window, range[1] - range[0]);
    this.prefetch([range], READ_AHEAD_PRIORITY);
  }
}
