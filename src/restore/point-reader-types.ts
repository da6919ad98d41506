/**
 * The shapes of {@link PointReader}: its options, counters and borrowed chunks (public, through
 * the restore index), and its cache entries (internal to src/restore).
 */
import type { CodecPool } from '../repository/index.js';

/** Counters for what a reader fetched (tests and benchmarks check them). */
export interface PointReaderStats {
  /** Data chunks fetched from the repository (zero chunks are never fetched). */
  chunkFetches: number;
  chunkBytesFetched: number;
  cacheHits: number;
  /** Data chunks fetched by prefetch or read-ahead (included in `chunkFetches`). */
  prefetched?: number;
  /** Chunks still queued for prefetch (including read-ahead), cached ones not yet skipped. */
  prefetchQueued?: number;
  /** Backend reads made (one per run of adjacent blobs). */
  packReads?: number;
}

/** Options of {@link PointReader}. */
export interface PointReaderOptions {
  /** Bytes of decoded chunks to keep; default 64 MiB. */
  cacheBytes?: number;
  /**
   * Worker threads to decode and check chunks on. With a pool, adjacent blobs of a pack are
   * also read with one backend read and decoded into shared memory. Without one, chunks are
   * read and decoded one by one on the calling thread.
   */
  pool?: CodecPool;
  /** Chunks to prefetch ahead of a sequential stream; default 4 MiB worth, 0 disables. */
  readAheadChunks?: number;
}

/**
 * Chunks lent by {@link PointReader.borrow}: `chunks[k]` is chunk `first + k` (null for a zero
 * chunk). The buffers share the reader's cache memory and stay valid only until `release()`.
 */
export interface BorrowedChunks {
  chunks: (Buffer | null)[];
  /** Gives the chunks back; call it exactly once, when nothing reads the buffers any more. */
  release(): void;
}

// ---- internal to the reader --------------------------------------------------------------

/** A decoded chunk in the cache (or just fetched). */
export interface Entry {
  /** The content, or null for a zero chunk. A view of `slot` when slot ≥ 0. */
  data: Buffer | null;
  /** Arena slot holding the content, or -1 (heap buffer or zero chunk). */
  slot: number;
  /** Fetched by prefetch and not read since. */
  prefetched: boolean;
}

/** Called once when a fetched chunk lands (`entry`) or fails (`entry` null, `err`). */
export type Waiter = (entry: Entry | null, err?: unknown) => void;

/** A chunk being fetched. */
export interface Pending {
  waiters: Waiter[];
  /** Slot references to add for readers that asked while it was in flight. */
  pins: number;
  /** Fetched by prefetch, and nobody read it while in flight. */
  prefetch: boolean;
}

export const ZERO_ENTRY: Entry = { data: null, slot: -1, prefetched: false };
