/**
 * Full restore of one disk to a sparse raw file, a block device or a thin qcow2 image. Chunks are read from packs
 * in coalesced runs, decoded and checked on worker threads (a damaged chunk stops the restore
 * with an error naming it: wrong data is never written), and written at their offsets; zero
 * chunks stay holes in files and are written as zeros on devices. A file target is written
 * under a temporary name and renamed into place only when complete.
 */
import { SlabPool, VmvaultError } from '../core/index.js';
import {
  type CodecPool,
  type DiskRecord,
  fromHex,
  packObjectName,
  type Repository,
} from '../repository/index.js';
import { decodeItems, groupRuns, locateChunks, runBytes } from './pack-runs.js';
import { openQcow2Target } from './qcow2-target.js';
import { openRawTarget, type RestoreTarget } from './restore-target.js';

/** Progress of a running restore. */
export interface RestoreProgress {
  done: number;
  total: number;
  bytesWritten: number;
}

/** Options of {@link restoreDisk}. */
export interface RestoreOptions {
  onProgress?: (p: RestoreProgress) => void;
  /** Overwrite an existing regular file. */
  force?: boolean;
  /** Largest single read from a pack. */
  maxReadBytes?: number;
  /**
   * `raw` (default): a sparse file or a block device. `qcow2`: a new thin qcow2 image, written
   * through a qemu-nbd that vmvault starts (zero chunks stay unallocated).
   */
  format?: 'raw' | 'qcow2';
  /**
   * Continue an interrupted restore: reuse the partial target (`<target>.vmvault-partial`, or
   * the device) instead of creating it, and skip chunks below {@link fromChunk}.
   */
  resume?: boolean;
  /** First chunk to write (with `resume`): everything below it was written and synced before. */
  fromChunk?: number;
  /** On failure keep the partial target (for a later `resume`) instead of removing it. */
  keepPartial?: boolean;
  /**
   * Checkpoints for resuming: about every `everyBytes` written, the target is synced and
   * `save(chunk)` called with a chunk index below which everything is written and durable.
   */
  checkpoint?: { everyBytes: number; save: (chunk: number) => Promise<void> };
  /** Bandwidth limit for reading the repository, bytes per second (default: none). */
  bytesPerSecond?: number;
}

/** What a restore did. */
export interface RestoreResult {
  target: string;
  size: number;
  bytesWritten: number;
  chunks: number;
}

/**
 * Unused bytes a pack read may span between two blobs it restores. The chunks a later backup
 * changed split the runs of the full backup's packs (their old blobs stay between the ones still
 * used): reading over them keeps one read and one worker message per ~4 MiB instead of one per
 * few chunks (core-bench's last point: 1243 runs, 480 of them of ≤ 4 chunks, without this).
 */
const RUN_GAP = 256 << 10;

/** Bytes written between early write-back requests (so the final fsync is short). */
const WRITEBACK_EVERY = 128 << 20;

/** Restores `disk` of a restore point to `target`. */
export async function restoreDisk(
  repo: Repository,
  pool: CodecPool,
  disk: DiskRecord,
  target: string,
  opts: RestoreOptions = {},
): Promise<RestoreResult> {
  const force = opts.force ?? false;
  const resume = opts.resume === true;
  const out: RestoreTarget =
    opts.format === 'qcow2'
      ? await openQcow2Target(target, disk.size, disk.chunkSize, force, { resume })
      : await openRawTarget(target, disk.size, force, { resume });
  const isDevice = out.needsZeros;
  const cs = disk.chunkSize;
  const progress: RestoreProgress = { done: 0, total: disk.size, bytesWritten: 0 };
  const maxRead = opts.maxReadBytes ?? 4 << 20;
  let chunks = 0;
  const inflight = new Set<Promise<void>>();
  let failure: unknown = null;
  const track = (p: Promise<void>): void => {
    const q = p
      .catch((e: unknown) => {
        failure ??= e;
      })
      .finally(() => inflight.delete(q));
    inflight.add(q);
  };
  // Runs are read into shared slabs; a slab also fits the largest single blob.
  let flushedAt = 0;
  const slabs = new SlabPool(Math.max(maxRead, cs + 4096), 8);
  const fromChunk = resume ? Math.max(0, opts.fromChunk ?? 0) : 0;
  const limiter = opts.bytesPerSecond ? new RateLimiter(opts.bytesPerSecond) : null;
  // Checkpoint frontier: first chunk of every run in flight; below the smallest, all is written.
  const pendingRuns = new Map<Promise<void>, number>();
  let launchedTo = fromChunk;
  let checkpointAt = 0;
  let checkpointing: Promise<void> | null = null;
  const maybeCheckpoint = (): void => {
    const cp = opts.checkpoint;
    if (!cp || checkpointing || progress.bytesWritten - checkpointAt < cp.everyBytes) return;
    checkpointAt = progress.bytesWritten;
    let frontier = launchedTo;
    for (const first of pendingRuns.values()) frontier = Math.min(frontier, first);
    checkpointing = (async () => {
      await (out.sync ? out.sync() : Promise.resolve());
      await cp.save(frontier);
    })()
      .catch((e: unknown) => {
        failure ??= e;
      })
      .finally(() => {
        checkpointing = null;
        // Runs that finished while this checkpoint synced did not start one: catch up.
        if (pendingRuns.size > 0) maybeCheckpoint();
      });
  };
  progress.done = Math.min(disk.size, fromChunk * cs);

  try {
    const reader = repo.treeReader(fromHex(disk.root), disk.size, cs);
    let zeroFrom = fromChunk * cs; // devices: next offset not yet written
    for await (const leaf of reader.leaves()) {
      if (leaf.first + leaf.entries.length <= fromChunk) continue;
      // Locate this leaf's chunks and group them into contiguous runs per pack.
      const items = locateChunks(
        repo,
        leaf.entries.flatMap((digest, i) =>
          digest && leaf.first + i >= fromChunk ? [{ index: leaf.first + i, digest }] : [],
        ),
      );
      if (isDevice) {
        // Zero the gaps before and inside this leaf.
        for (const it of items) {
          const off = it.index * cs;
          if (off > zeroFrom) await out.writeZeros(zeroFrom, off - zeroFrom);
          zeroFrom = off + it.rawLength;
        }
      }
      // Runs are in pack order, not chunk order: until all of a leaf's runs are launched, the
      // checkpoint frontier stays at the leaf's start.
      launchedTo = Math.max(launchedTo, leaf.first);
      for (const run of groupRuns(items, maxRead, RUN_GAP)) {
        if (failure) throw failure;
        if (limiter) await limiter.take(runBytes(run));
        const slab = await slabs.acquire();
        let runFirst = run[0]!.index;
        for (const it of run) runFirst = Math.min(runFirst, it.index);
        const job = (async () => {
          try {
            const first = run[0]!;
            const last = run[run.length - 1]!;
            const length = runBytes(run);
            await readRun(repo, first.pack, first.offset, Buffer.from(slab.shared, 0, length), first.digest);
            // Workers check every blob and, for files and devices, write it themselves.
            const decoded = await pool.decodeRunSplit(
              slab.shared,
              decodeItems(run, (c) => c.index * cs),
              `pack ${first.pack}`,
              out.fd ?? null,
              // Self-checked blobs (format v2) carry their digest, a content checksum and, when
              // encrypted, a seal: damage is still caught, without re-hashing every chunk.
              { trustSelfCheck: true, directFd: out.directFd ?? null },
            );
            for (let n = 0; n < run.length; n++) {
              const it = run[n]!;
              if (out.fd === undefined) await out.write(decoded[n]!, it.index * cs);
              progress.bytesWritten += it.rawLength;
              chunks++;
            }
            progress.done = Math.max(progress.done, Math.min(disk.size, (last.index + 1) * cs));
            if (progress.bytesWritten - flushedAt >= WRITEBACK_EVERY) {
              flushedAt = progress.bytesWritten;
              out.startWriteback?.();
            }
            opts.onProgress?.(progress);
          } finally {
            slabs.release(slab);
          }
        })();
        pendingRuns.set(job, runFirst);
        void job.then(
          () => {
            pendingRuns.delete(job);
            maybeCheckpoint();
          },
          () => pendingRuns.delete(job),
        );
        track(job);
      }
      launchedTo = Math.max(launchedTo, leaf.first + leaf.entries.length);
    }
    await Promise.all(inflight);
    await checkpointing;
    if (failure) throw failure;
    if (isDevice && zeroFrom < disk.size) await out.writeZeros(zeroFrom, disk.size - zeroFrom);
    progress.done = disk.size;
    opts.onProgress?.(progress);
    await out.finalize();
    return { target, size: disk.size, bytesWritten: progress.bytesWritten, chunks };
  } catch (err) {
    await Promise.allSettled(inflight);
    await checkpointing;
    await out.abort(opts.keepPartial === true);
    throw err;
  }
}

/** A token bucket: `take(n)` waits until `n` more bytes fit in the rate. */
class RateLimiter {
  private next = Date.now();

  constructor(private readonly bytesPerSecond: number) {}

  async take(bytes: number): Promise<void> {
    const now = Date.now();
    this.next = Math.max(this.next, now) + (1000 * bytes) / this.bytesPerSecond;
    const wait = this.next - now - (1000 * bytes) / this.bytesPerSecond;
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
}

async function readRun(
  repo: Repository,
  pack: string,
  offset: number,
  into: Buffer,
  firstDigest: Buffer,
): Promise<void> {
  try {
    await repo.backend.readRangeInto(packObjectName(pack), offset, into);
  } catch (err) {
    if (err instanceof VmvaultError && (err.code === 'E_NOT_FOUND' || err.code === 'E_CORRUPT')) {
      // Let the repository produce the precise error (missing or truncated pack, with the chunk).
      await repo.readStored(firstDigest);
    }
    throw err;
  }
}
