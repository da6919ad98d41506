/**
 * The backup pipeline for one disk: read data extents → cut fixed-size chunks → drop zero
 * chunks → hash → deduplicate → encode on worker threads (compress, seal) → append to packs,
 * while the restore-point tree is built in chunk order. Reading the next segment, hashing this
 * one and encoding earlier chunks overlap; memory is bounded by the segment size and the
 * number of chunks in flight, whatever the disk size.
 */
import { type Slab, SlabPool, VmvaultError } from '../core/index.js';
import {
  BlobType,
  type CodecPool,
  type DiskRecord,
  fromHex,
  hex,
  type Repository,
  PAGE_FANOUT,
  TreeBuilder,
  ZERO_DIGEST,
} from '../repository/index.js';
import type { DiskSource } from '../sources/index.js';

/** Progress of a running backup. */
export interface BackupProgress {
  /** Bytes of the disk processed (read or skipped as holes). */
  done: number;
  /** Disk size. */
  total: number;
  /** Bytes actually read from the source. */
  bytesRead: number;
  /** Bytes of new chunk data added (encoded size). */
  bytesStored: number;
}

/** Options of {@link backupDisk}. */
export interface BackupDiskOptions {
  /** Name of the disk inside the point. */
  name: string;
  method: DiskRecord['method'];
  reason: string;
  onProgress?: (p: BackupProgress) => void;
  /** Bytes read per source read (a multiple of the chunk size); default 4 MiB. */
  segmentSize?: number;
  /** Chunks being encoded at once; default 64. */
  maxInFlight?: number;
  /**
   * The same disk in the parent restore point. Ranges the source reports as `unchanged` take
   * their chunk digests from it instead of being read.
   */
  parent?: DiskRecord;
}

const DIGEST_SIZE = 32;

/** Segments read and hashed ahead of the one being deduplicated. */
const READ_AHEAD = 3;

/** Backs up one disk into `repo`; the caller flushes the repository and writes the manifest. */
export async function backupDisk(
  repo: Repository,
  pool: CodecPool,
  source: DiskSource,
  opts: BackupDiskOptions,
): Promise<DiskRecord> {
  const cs = repo.config.chunkSize;
  const size = source.size;
  const chunkCount = Math.ceil(size / cs);
  const segChunks = Math.max(1, Math.floor((opts.segmentSize ?? 4 << 20) / cs));
  const maxInFlight = opts.maxInFlight ?? 256;
  const tree = new TreeBuilder(chunkCount, (_level, page) => repo.storePage(page));
  const stats = { bytesRead: 0, bytesStored: 0, chunksNew: 0, chunksReused: 0, chunksZero: 0 };
  const progress: BackupProgress = { done: 0, total: size, bytesRead: 0, bytesStored: 0 };

  // Encoded chunks waiting to be appended to packs, in submission order.
  const queue: { digest: Buffer; rawLength: number; encoded: Promise<Buffer> }[] = [];
  const queued = new Set<string>();
  const drainOne = async (): Promise<void> => {
    const q = queue.shift()!;
    const stored = await q.encoded;
    await repo.addBlob(BlobType.data, q.digest, stored, q.rawLength);
    queued.delete(q.digest.toString('latin1'));
    stats.bytesStored += stored.length;
    progress.bytesStored = stats.bytesStored;
  };

  /**
   * Handles chunk `index` whose digest a worker computed (null: reads as zeros). New chunks are
   * collected in `fresh` and sent to the workers per segment, in batches.
   */
  const processChunk = async (
    index: number,
    digest: Buffer | null,
    offset: number,
    length: number,
    fresh: { digest: Buffer; offset: number; length: number }[],
  ): Promise<void> => {
    if (!digest) {
      stats.chunksZero++;
      return; // zero chunks are the default in the tree
    }
    const key = digest.toString('latin1');
    if (repo.hasBlob(digest) || queued.has(key)) {
      stats.chunksReused++;
    } else {
      stats.chunksNew++;
      queued.add(key);
      fresh.push({ digest, offset, length });
    }
    await tree.set(index, digest);
  };

  /** Sends a segment's new chunks to the workers (one message per worker) and queues them. */
  const encodeFresh = async (
    slab: Slab,
    fresh: { digest: Buffer; offset: number; length: number }[],
  ): Promise<void> => {
    if (fresh.length === 0) return;
    const parts = Math.min(pool.size, fresh.length);
    const per = Math.ceil(fresh.length / parts);
    for (let k = 0; k < parts; k++) {
      const batch = fresh.slice(k * per, (k + 1) * per);
      slabs.retain(slab);
      const encoded = pool
        .encodeSharedMany(
          slab.shared,
          batch.map((b) => [b.offset, b.length] as [number, number]),
          batch.map((b) => b.digest),
        )
        .finally(() => slabs.release(slab));
      encoded.catch(() => {}); // awaited through the queue
      batch.forEach((b, n) => {
        queue.push({ digest: b.digest, rawLength: b.length, encoded: encoded.then((all) => all[n]!) });
      });
    }
    while (queue.length > maxInFlight) await drainOne();
  };

  // Chunk runs to read or to copy from the parent, from the source's extents.
  const parentTree = opts.parent
    ? repo.treeReader(fromHex(opts.parent.root), opts.parent.size, opts.parent.chunkSize)
    : null;
  if (opts.parent && opts.parent.chunkSize !== cs) {
    throw new VmvaultError('E_INTERNAL', 'parent restore point was cut with another chunk size');
  }
  const runs = chunkRuns(source, cs, chunkCount, parentTree !== null);
  type Item =
    | { kind: 'read'; first: number; slab: Slab; length: number; digests: Buffer }
    | { kind: 'copy'; first: number; count: number };
  const segBytes = segChunks * cs;
  const slabs = new SlabPool(segBytes, 10);
  const readSegment = async (first: number, count: number): Promise<Item> => {
    const start = first * cs;
    const len = Math.min(count * cs, size - start);
    const slab = await slabs.acquire();
    try {
      await source.readInto(Buffer.from(slab.shared, 0, len), start);
      stats.bytesRead += len;
      // Hash on the workers, the segment split between them at chunk boundaries.
      const parts = Math.min(pool.size, Math.ceil(len / cs));
      const per = Math.ceil(Math.ceil(len / cs) / parts) * cs;
      const hashed = await Promise.all(
        Array.from({ length: parts }, (_, k) =>
          pool.hashShared(slab.shared, k * per, Math.min(per, len - k * per), cs),
        ),
      );
      return { kind: 'read', first, slab, length: len, digests: Buffer.concat(hashed) };
    } catch (err) {
      slabs.release(slab);
      throw err;
    }
  };

  // Work items generated lazily from the runs: reads cut into segments, copies whole.
  const items = (async function* () {
    for await (const r of runs) {
      if (r.kind === 'copy') {
        yield { kind: 'copy', first: r.first, count: r.end - r.first } as const;
        continue;
      }
      for (let a = r.first; a < r.end; a += segChunks)
        yield { kind: 'read', first: a, count: Math.min(segChunks, r.end - a) } as const;
    }
  })();
  const startNext = async (): Promise<Item | null> => {
    const n = await items.next();
    if (n.done) return null;
    return n.value.kind === 'read' ? readSegment(n.value.first, n.value.count) : n.value;
  };
  // Segments read and hashed ahead of the one being deduplicated, in order. More than one keeps
  // both workers fed: a worker that finishes its share of a segment's hashing goes on with the
  // next segment instead of waiting for the main thread's round trip.
  const ahead: Promise<Item | null>[] = [];
  const readAhead = (): void => {
    while (ahead.length < READ_AHEAD) {
      const p = startNext();
      p.catch(() => {}); // awaited in order below
      ahead.push(p);
    }
  };

  const parentSameShape = opts.parent !== undefined && Math.ceil(opts.parent.size / cs) === chunkCount;
  const copyFromParent = async (first: number, count: number): Promise<void> => {
    const end = first + count;
    for (let i = first; i < end; ) {
      // A whole leaf page unchanged: take the parent's page as it is (no per-chunk work).
      const leafEnd = Math.min(chunkCount, i + PAGE_FANOUT);
      if (parentSameShape && i % PAGE_FANOUT === 0 && leafEnd <= end) {
        const page = await parentTree!.entry(1, i / PAGE_FANOUT);
        if (page && !repo.hasBlob(page)) {
          throw new VmvaultError(
            'E_CHUNK_MISSING',
            `index page ${hex(page)} of the parent restore point is missing`,
            {
              details: { digest: hex(page) },
            },
          );
        }
        await tree.setLeaf(i / PAGE_FANOUT, page);
        stats.chunksReused += leafEnd - i;
        i = leafEnd;
        continue;
      }
      const d = await parentTree!.lookup(i);
      i++;
      if (!d) {
        stats.chunksZero++;
        continue;
      }
      if (!repo.hasBlob(d)) {
        throw new VmvaultError('E_CHUNK_MISSING', `chunk ${hex(d)} of the parent restore point is missing`, {
          details: { digest: hex(d) },
        });
      }
      stats.chunksReused++;
      await tree.set(i - 1, d);
    }
  };

  try {
    for (;;) {
      readAhead();
      const seg = await ahead.shift()!;
      if (!seg) break;
      if (seg.kind === 'copy') {
        await copyFromParent(seg.first, seg.count);
        progress.done = Math.min(size, (seg.first + seg.count) * cs);
        opts.onProgress?.(progress);
        continue;
      }
      const n = Math.ceil(seg.length / cs);
      try {
        const fresh: { digest: Buffer; offset: number; length: number }[] = [];
        for (let i = 0; i < n; i++) {
          const d = seg.digests.subarray(i * DIGEST_SIZE, (i + 1) * DIGEST_SIZE);
          const off = i * cs;
          await processChunk(
            seg.first + i,
            d.equals(ZERO_DIGEST) ? null : Buffer.from(d),
            off,
            Math.min(cs, seg.length - off),
            fresh,
          );
        }
        await encodeFresh(seg.slab, fresh);
      } finally {
        slabs.release(seg.slab); // the segment's own reference
      }
      progress.done = Math.min(size, (seg.first + n) * cs);
      progress.bytesRead = stats.bytesRead;
      opts.onProgress?.(progress);
    }
    while (queue.length > 0) await drainOne();
    const root = await tree.finish();
    progress.done = size;
    opts.onProgress?.(progress);
    return {
      name: opts.name,
      size,
      chunkSize: cs,
      root: hex(root),
      source: { kind: source.kind, path: source.path, format: source.format },
      method: opts.method,
      reason: opts.reason,
      stats: {
        bytesRead: stats.bytesRead,
        bytesStored: stats.bytesStored,
        chunksNew: stats.chunksNew,
        chunksReused: stats.chunksReused,
        chunksZero: stats.chunksZero,
      },
    };
  } catch (err) {
    // Let encodes in flight settle so no rejection goes unhandled.
    await Promise.allSettled(queue.map((q) => q.encoded));
    for (const a of await Promise.allSettled(ahead)) {
      if (a.status === 'fulfilled' && a.value?.kind === 'read') slabs.release(a.value.slab);
    }
    throw err instanceof VmvaultError
      ? err
      : new VmvaultError('E_IO', `backup of ${source.path} failed: ${(err as Error).message}`, {
          cause: err,
        });
  }
}

/** A run of chunks and what to do with them. */
interface Run {
  kind: 'read' | 'copy';
  first: number;
  end: number;
}

/**
 * Yields runs of chunks in order: `read` for chunks that overlap a data extent, `copy` for
 * chunks covered only by unchanged (and zero) extents when a parent exists. Chunks that overlap
 * only zero extents are in no run. A chunk that overlaps a changed data extent is read even when
 * another part of it is unchanged.
 */
async function* chunkRuns(
  source: DiskSource,
  cs: number,
  chunkCount: number,
  haveParent: boolean,
): AsyncGenerator<Run> {
  let cur: Run | null = null;
  // Chunk-level status, assigned in order; a chunk's status can only be raised (zero < copy < read).
  let pending: Run | null = null;
  const rank = { copy: 1, read: 2 } as const;
  const emit = function* (r: Run): Generator<Run> {
    if (r.first >= r.end) return;
    if (cur && cur.kind === r.kind && r.first <= cur.end) cur.end = Math.max(cur.end, r.end);
    else {
      if (cur) yield cur;
      cur = { ...r };
    }
  };
  for await (const e of source.extents()) {
    if (!e.data || e.length === 0) continue;
    const kind: Run['kind'] = e.unchanged && haveParent ? 'copy' : 'read';
    const a = Math.floor(e.offset / cs);
    const b = Math.min(chunkCount, Math.ceil((e.offset + e.length) / cs));
    if (pending && a < pending.end) {
      // Overlaps the previous extent's last chunk: that chunk takes the higher status.
      const shared: number = pending.end - 1;
      if (rank[kind] > rank[pending.kind]) {
        yield* emit({ kind: pending.kind, first: pending.first, end: shared });
        pending = { kind, first: shared, end: b };
        continue;
      }
      yield* emit(pending);
      pending = { kind, first: pending.end, end: b };
      continue;
    }
    if (pending) yield* emit(pending);
    pending = { kind, first: a, end: b };
  }
  if (pending) yield* emit(pending);
  if (cur) yield cur;
}
