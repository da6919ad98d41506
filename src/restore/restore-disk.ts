/**
 * Full restore of one disk to a sparse raw file, a block device or a thin qcow2 image. Chunks are read from packs
 * in coalesced runs, decoded and checked on worker threads (a damaged chunk stops the restore
 * with an error naming it: wrong data is never written), and written at their offsets; zero
 * chunks stay holes in files and are written as zeros on devices. A file target is written
 * under a temporary name and renamed into place only when complete.
 */
import { VmvaultError } from '../core/index.js';
import {
  type CodecPool,
  type DiskRecord,
  fromHex,
  packObjectName,
  type Repository,
} from '../repository/index.js';
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
}

/** What a restore did. */
export interface RestoreResult {
  target: string;
  size: number;
  bytesWritten: number;
  chunks: number;
}

/** Restores `disk` of a restore point to `target`. */
export async function restoreDisk(
  repo: Repository,
  pool: CodecPool,
  disk: DiskRecord,
  target: string,
  opts: RestoreOptions = {},
): Promise<RestoreResult> {
  const force = opts.force ?? false;
  const out: RestoreTarget =
    opts.format === 'qcow2'
      ? await openQcow2Target(target, disk.size, disk.chunkSize, force)
      : await openRawTarget(target, disk.size, force);
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
  const writeAt = async (buf: Buffer, offset: number): Promise<void> => {
    await out.write(buf, offset);
    progress.bytesWritten += buf.length;
  };

  try {
    const reader = repo.treeReader(fromHex(disk.root), disk.size, cs);
    let zeroFrom = 0; // devices: next offset not yet written
    for await (const leaf of reader.leaves()) {
      // Locate this leaf's chunks and group them into contiguous runs per pack.
      const items: {
        index: number;
        digest: Buffer;
        pack: string;
        offset: number;
        length: number;
        rawLength: number;
      }[] = [];
      for (let i = 0; i < leaf.entries.length; i++) {
        const d = leaf.entries[i];
        if (!d) continue;
        const loc = repo.locate(d);
        items.push({
          index: leaf.first + i,
          digest: d,
          pack: loc.pack,
          offset: loc.entry.offset,
          length: loc.entry.length,
          rawLength: loc.entry.rawLength,
        });
      }
      if (isDevice) {
        // Zero the gaps before and inside this leaf.
        for (const it of items) {
          const off = it.index * cs;
          if (off > zeroFrom) await out.writeZeros(zeroFrom, off - zeroFrom);
          zeroFrom = off + it.rawLength;
        }
      }
      items.sort((a, b) => (a.pack < b.pack ? -1 : a.pack > b.pack ? 1 : a.offset - b.offset));
      let i = 0;
      while (i < items.length) {
        let j = i + 1;
        while (
          j < items.length &&
          items[j]!.pack === items[i]!.pack &&
          items[j]!.offset === items[j - 1]!.offset + items[j - 1]!.length &&
          items[j]!.offset + items[j]!.length - items[i]!.offset <= maxRead
        )
          j++;
        const run = items.slice(i, j);
        i = j;
        while (inflight.size >= 8) await Promise.race(inflight);
        if (failure) throw failure;
        track(
          (async () => {
            const first = run[0]!;
            const last = run[run.length - 1]!;
            const data = await readRun(
              repo,
              first.pack,
              first.offset,
              last.offset + last.length - first.offset,
              first.digest,
            );
            await Promise.all(
              run.map(async (it) => {
                const stored = data.subarray(it.offset - first.offset, it.offset - first.offset + it.length);
                const plain = await pool.decode(stored, it.digest, it.rawLength, `pack ${it.pack}`);
                await writeAt(plain, it.index * cs);
                chunks++;
              }),
            );
            progress.done = Math.max(progress.done, Math.min(disk.size, (last.index + 1) * cs));
            opts.onProgress?.(progress);
          })(),
        );
      }
    }
    await Promise.all(inflight);
    if (failure) throw failure;
    if (isDevice && zeroFrom < disk.size) await out.writeZeros(zeroFrom, disk.size - zeroFrom);
    progress.done = disk.size;
    opts.onProgress?.(progress);
    await out.finalize();
    return { target, size: disk.size, bytesWritten: progress.bytesWritten, chunks };
  } catch (err) {
    await Promise.allSettled(inflight);
    await out.abort();
    throw err;
  }
}

async function readRun(
  repo: Repository,
  pack: string,
  offset: number,
  length: number,
  firstDigest: Buffer,
): Promise<Buffer> {
  try {
    return await repo.backend.readRange(packObjectName(pack), offset, length);
  } catch (err) {
    if (err instanceof VmvaultError && (err.code === 'E_NOT_FOUND' || err.code === 'E_CORRUPT')) {
      // Let the repository produce the precise error (missing or truncated pack, with the chunk).
      await repo.readStored(firstDigest);
    }
    throw err;
  }
}
