/**
 * Random access to one disk of a restore point, as a {@link BlockReader}: reads touch only the
 * chunks they cover, decoded chunks are kept in a bounded LRU cache, and concurrent reads of
 * the same chunk share one fetch. This is what live mounts and file-level restore read through.
 */
import type { BlockReader, Extent } from '../core/index.js';
import { VmvaultError } from '../core/index.js';
import { type DiskRecord, fromHex, type Repository, type TreeReader } from '../repository/index.js';

/** Counters for what a reader fetched (tests and benchmarks check them). */
export interface PointReaderStats {
  chunkFetches: number;
  chunkBytesFetched: number;
  cacheHits: number;
}

/** Options of {@link PointReader}. */
export interface PointReaderOptions {
  /** Bytes of decoded chunks to keep; default 64 MiB. */
  cacheBytes?: number;
}

/** A restore point's disk as a random-access block reader. */
export class PointReader implements BlockReader {
  readonly size: number;
  readonly chunkSize: number;
  readonly stats: PointReaderStats = { chunkFetches: 0, chunkBytesFetched: 0, cacheHits: 0 };
  private readonly tree: TreeReader;
  private readonly cache = new Map<number, Buffer | null>();
  private readonly inflight = new Map<number, Promise<Buffer | null>>();
  private cachedBytes = 0;
  private readonly cacheLimit: number;

  constructor(
    private readonly repo: Repository,
    readonly disk: DiskRecord,
    opts: PointReaderOptions = {},
  ) {
    this.size = disk.size;
    this.chunkSize = disk.chunkSize;
    this.tree = repo.treeReader(fromHex(disk.root), disk.size, disk.chunkSize);
    this.cacheLimit = opts.cacheBytes ?? 64 << 20;
  }

  /** Decoded content of chunk `index`, or null for a zero chunk. */
  chunk(index: number): Promise<Buffer | null> {
    if (this.cache.has(index)) {
      const hit = this.cache.get(index)!;
      this.cache.delete(index);
      this.cache.set(index, hit);
      this.stats.cacheHits++;
      return Promise.resolve(hit);
    }
    const pending = this.inflight.get(index);
    if (pending) return pending;
    const p = this.fetch(index).finally(() => this.inflight.delete(index));
    this.inflight.set(index, p);
    return p;
  }

  private async fetch(index: number): Promise<Buffer | null> {
    const digest = await this.tree.lookup(index);
    let data: Buffer | null = null;
    if (digest) {
      data = await this.repo.loadBlob(digest);
      this.stats.chunkFetches++;
      this.stats.chunkBytesFetched += data.length;
    }
    this.cache.set(index, data);
    this.cachedBytes += data?.length ?? 0;
    while (this.cachedBytes > this.cacheLimit && this.cache.size > 1) {
      const [k, v] = this.cache.entries().next().value as [number, Buffer | null];
      this.cache.delete(k);
      this.cachedBytes -= v?.length ?? 0;
    }
    return data;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new VmvaultError(
        'E_USAGE',
        `read of ${length} bytes at ${offset} is outside the disk (${this.size} bytes)`,
      );
    }
    const out = Buffer.alloc(length);
    const cs = this.chunkSize;
    const first = Math.floor(offset / cs);
    const last = Math.floor((offset + length - 1) / cs);
    const parts: Promise<void>[] = [];
    for (let i = first; i <= last && length > 0; i++) {
      parts.push(
        this.chunk(i).then((c) => {
          if (!c) return;
          const cStart = i * cs;
          const from = Math.max(offset, cStart);
          const to = Math.min(offset + length, cStart + c.length);
          if (to > from) c.copy(out, from - offset, from - cStart, to - cStart);
        }),
      );
    }
    await Promise.all(parts);
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
