/**
 * The backup pipeline for one disk: read data extents → cut fixed-size chunks → drop zero
 * chunks → hash → deduplicate → encode on worker threads (compress, seal) → append to packs,
 * while the restore-point tree is built in chunk order. Reading the next segment, hashing this
 * one and encoding earlier chunks overlap; memory is bounded by the segment size and the
 * number of chunks in flight, whatever the disk size.
 */
import { VmvaultError } from '../core/index.js';
import {
  BlobType,
  type CodecPool,
  type DiskRecord,
  digestOf,
  hex,
  type Repository,
  TreeBuilder,
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
}

const ZEROS = Buffer.alloc(16 << 20);

/** Backs up one disk into `repo`; the caller flushes the repository and writes the manifest. */
export async function backupDisk(
  repo: Repository,
  pool: CodecPool,
  source: DiskSource,
  opts: BackupDiskOptions,
): Promise<DiskRecord> {
  const cs = repo.config.chunkSize;
  const macKey = repo.macKey;
  const size = source.size;
  const chunkCount = Math.ceil(size / cs);
  const segChunks = Math.max(1, Math.floor((opts.segmentSize ?? 4 << 20) / cs));
  const maxInFlight = opts.maxInFlight ?? 64;
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

  const processChunk = async (index: number, data: Buffer): Promise<void> => {
    if (data.equals(ZEROS.subarray(0, data.length))) {
      stats.chunksZero++;
      return; // zero chunks are the default in the tree
    }
    const digest = digestOf(data, macKey);
    if (repo.hasBlob(digest) || queued.has(digest.toString('latin1'))) {
      stats.chunksReused++;
    } else {
      stats.chunksNew++;
      queued.add(digest.toString('latin1'));
      queue.push({ digest, rawLength: data.length, encoded: pool.encode(new Uint8Array(data)) });
      while (queue.length > maxInFlight) await drainOne();
    }
    await tree.set(index, digest);
  };

  // Chunk runs that hold data, from the source's extents.
  const runs = chunkRuns(source, cs, chunkCount);
  let nextRead: Promise<{ first: number; buf: Buffer } | null> | null = null;
  const readSegment = async (first: number, count: number): Promise<{ first: number; buf: Buffer }> => {
    const start = first * cs;
    const len = Math.min(count * cs, size - start);
    const buf = Buffer.allocUnsafeSlow(len);
    await source.readInto(buf, start);
    stats.bytesRead += len;
    return { first, buf };
  };

  // Segments to read, generated lazily from the runs.
  const segments = (async function* () {
    for await (const [a, b] of runs) {
      for (let s = a; s < b; s += segChunks) yield [s, Math.min(segChunks, b - s)] as const;
    }
  })();
  const startNext = async (): Promise<{ first: number; buf: Buffer } | null> => {
    const n = await segments.next();
    if (n.done) return null;
    return readSegment(n.value[0], n.value[1]);
  };

  try {
    nextRead = startNext();
    for (;;) {
      const seg = await nextRead;
      if (!seg) break;
      nextRead = startNext(); // read ahead while this segment is hashed
      const n = Math.ceil(seg.buf.length / cs);
      for (let i = 0; i < n; i++) {
        await processChunk(seg.first + i, seg.buf.subarray(i * cs, Math.min((i + 1) * cs, seg.buf.length)));
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
    if (nextRead) await Promise.resolve(nextRead).catch(() => {});
    throw err instanceof VmvaultError
      ? err
      : new VmvaultError('E_IO', `backup of ${source.path} failed: ${(err as Error).message}`, {
          cause: err,
        });
  }
}

/** Yields [firstChunk, endChunk) runs of chunks that overlap data extents, merged and in order. */
async function* chunkRuns(
  source: DiskSource,
  cs: number,
  chunkCount: number,
): AsyncGenerator<[number, number]> {
  let cur: [number, number] | null = null;
  for await (const e of source.extents()) {
    if (!e.data || e.length === 0) continue;
    const a = Math.floor(e.offset / cs);
    const b = Math.min(chunkCount, Math.ceil((e.offset + e.length) / cs));
    if (cur && a <= cur[1]) cur[1] = Math.max(cur[1], b);
    else {
      if (cur) yield cur;
      cur = [a, b];
    }
  }
  if (cur) yield cur;
}
