/**
 * Fetching the runs of a {@link PointReader}: one run of adjacent blobs of a pack is read (by
 * the workers themselves when the backend lends file descriptors, else here into a shared
 * slab) and decoded on the codec pool straight into arena slots; each chunk then lands in the
 * reader (settled) or fails there, through a {@link RunSink}.
 */
import { SlabPool } from '../core/index.js';
import type { ReadDescriptor } from '../backends/index.js';
import { type CodecPool, type DecodeIntoItem, packObjectName, type Repository } from '../repository/index.js';
import type { ChunkArena } from './chunk-arena.js';
import { type LocatedChunk, runBytes } from './pack-runs.js';
import type { Entry, PointReaderStats } from './point-reader-types.js';

/** Largest single backend read of adjacent blobs. */
export const MAX_RUN_BYTES = 4 << 20;
/** Shared read buffers for guest reads, and for prefetch (so prefetch never holds them all). */
const GUEST_SLABS = 6;
const PREFETCH_SLABS = 2;

/** Where fetched chunks go: the reader's cache and waiters. */
export interface RunSink {
  /** Chunk `index` arrived as `entry` (its slot holds one reference for the sink). */
  settle(index: number, entry: Entry, prefetch: boolean): void;
  /** Chunk `index` could not be fetched. */
  fail(index: number, err: unknown, prefetch: boolean): void;
  /** A free arena slot (evicting cached chunks as needed), or -1 when every slot is in use. */
  takeSlot(): number;
}

/** Reads and decodes runs of blobs for one reader. */
export class RunFetcher {
  /** Shared read buffers (guest reads, prefetch), made on first use: see {@link fetchRun}. */
  private guestSlabs: SlabPool | null = null;
  private prefetchSlabs: SlabPool | null = null;

  constructor(
    private readonly repo: Repository,
    private readonly pool: CodecPool,
    private readonly arena: ChunkArena,
    private readonly chunkSize: number,
    private readonly stats: PointReaderStats,
    private readonly sink: RunSink,
  ) {}

  /**
   * Reads one run of adjacent blobs and decodes it on the pool, in `parts` messages. Workers
   * read the pack themselves when the backend lends file descriptors; otherwise the run is read
   * here into a shared slab.
   */
  async fetchRun(run: LocatedChunk[], parts: number, prefetch: boolean): Promise<void> {
    const pool = this.pool;
    const backend = this.repo.backend;
    const first = run[0]!;
    const name = packObjectName(first.pack);
    const where = `pack ${first.pack}`;
    this.stats.packReads = (this.stats.packReads ?? 0) + 1;
    // Let the repository name the missing or truncated pack and the chunk.
    const readFailed = async (chunks: readonly LocatedChunk[], err: unknown): Promise<void> => {
      let named: unknown = err;
      try {
        await this.repo.readStored(chunks[0]!.digest);
      } catch (e) {
        named = e;
      }
      for (const c of chunks) this.sink.fail(c.index, named, prefetch);
    };
    const per = Math.ceil(run.length / Math.max(1, Math.min(parts, run.length)));
    const pieces: LocatedChunk[][] = [];
    for (let from = 0; from < run.length; from += per) pieces.push(run.slice(from, from + per));
    if (backend.openRead) {
      let fd: ReadDescriptor;
      try {
        fd = await backend.openRead(name);
      } catch (err) {
        return readFailed(run, err);
      }
      try {
        await Promise.all(
          pieces.map(async (piece) => {
            const base = piece[0]!.offset;
            const { items, slots } = this.destinations(piece, base);
            let errors: unknown[];
            try {
              errors = await pool.readAndDecodeInto(
                fd.fd,
                base,
                runBytes(piece),
                items,
                where,
                true,
                !prefetch,
              );
            } catch (err) {
              for (const slot of slots) if (slot >= 0) this.arena.release(slot);
              return readFailed(piece, err);
            }
            this.land(piece, items, slots, errors, prefetch);
          }),
        );
      } finally {
        fd.release();
      }
      return;
    }
    const slabs = this.slabPool(prefetch);
    const slab = await slabs.acquire();
    try {
      try {
        await backend.readRangeInto(name, first.offset, Buffer.from(slab.shared, 0, runBytes(run)));
      } catch (err) {
        return readFailed(run, err);
      }
      await Promise.all(
        pieces.map(async (piece) => {
          const { items, slots } = this.destinations(piece, first.offset);
          let errors: unknown[];
          try {
            errors = await pool.decodeInto(slab.shared, items, where, true, !prefetch);
          } catch (err) {
            errors = items.map(() => err);
          }
          this.land(piece, items, slots, errors, prefetch);
        }),
      );
    } finally {
      slabs.release(slab);
    }
  }

  /** The shared read buffers for guest reads or prefetch, made on first use. */
  private slabPool(prefetch: boolean): SlabPool {
    const slabBytes = MAX_RUN_BYTES + this.chunkSize + 4096;
    if (prefetch) {
      if (!this.prefetchSlabs) this.prefetchSlabs = new SlabPool(slabBytes, PREFETCH_SLABS);
      return this.prefetchSlabs;
    }
    if (!this.guestSlabs) this.guestSlabs = new SlabPool(slabBytes, GUEST_SLABS);
    return this.guestSlabs;
  }

  /**
   * Decode items for `chunks` (blob offsets relative to `base`), each with its destination: an
   * arena slot, or its own shared buffer when every slot is in use (readers hold them all).
   */
  private destinations(
    chunks: readonly LocatedChunk[],
    base: number,
  ): { items: DecodeIntoItem[]; slots: number[] } {
    const items: DecodeIntoItem[] = [];
    const slots: number[] = [];
    for (const c of chunks) {
      const slot = this.sink.takeSlot();
      slots.push(slot);
      const at =
        slot >= 0 ? this.arena.locate(slot) : { shared: new SharedArrayBuffer(c.rawLength), offset: 0 };
      items.push({
        offset: c.offset - base,
        length: c.length,
        digest: c.digest,
        rawLength: c.rawLength,
        target: at.shared,
        targetOffset: at.offset,
      });
    }
    return { items, slots };
  }

  /** Settles decoded chunks, or fails the ones whose decode failed (freeing their slots). */
  private land(
    chunks: readonly LocatedChunk[],
    items: readonly DecodeIntoItem[],
    slots: readonly number[],
    errors: readonly unknown[],
    prefetch: boolean,
  ): void {
    for (let n = 0; n < chunks.length; n++) {
      const c = chunks[n]!;
      const slot = slots[n]!;
      if (errors[n]) this.landFailed(c, slot, errors[n], prefetch);
      else {
        const data = slot >= 0 ? this.arena.view(slot, c.rawLength) : Buffer.from(items[n]!.target);
        this.sink.settle(c.index, { data, slot, prefetched: false }, prefetch);
      }
    }
  }

  private landFailed(c: LocatedChunk, slot: number, err: unknown, prefetch: boolean): void {
    if (slot >= 0) this.arena.release(slot);
    this.sink.fail(c.index, err, prefetch);
  }
}
