/**
 * Garbage collection: frees space no restore point uses. Runs under the exclusive lock, so no
 * backup is writing. Order keeps every live chunk locatable at every moment:
 *   1. index orphan packs; find used blobs by walking every restore point;
 *   2. copy live blobs out of mostly-dead packs into new packs (flushed and indexed);
 *   3. write one new index segment for all surviving packs; remove the old segments;
 *   4. remove the dead packs.
 * A crash at any step leaves a valid repository; the next gc finishes the job.
 */
import { BlobType } from './format.js';
import type { LocationIndex } from './location-index.js';
import { packObjectName } from './pack.js';
import { collectUsage, type UsageMap } from './reachability.js';
import type { Repository } from './repository.js';
import { VmvaultError } from '../core/index.js';
import { writeSegment, type PackRecord } from './location-index.js';

/** Options of {@link collectGarbage}. */
export interface GcOptions {
  /** Only report what would be done. */
  dryRun?: boolean;
  /** Repack a pack when at least this fraction of its bytes is garbage (default 0.2). */
  repackThreshold?: number;
}

/** What gc did (or would do). */
export interface GcReport {
  packsBefore: number;
  packsRemoved: number;
  packsRepacked: number;
  packsWritten: number;
  blobsRemoved: number;
  bytesFreed: number;
  orphanPacksRecovered: number;
}

/** Runs garbage collection. The caller holds the exclusive lock. */
export async function collectGarbage(repo: Repository, opts: GcOptions = {}): Promise<GcReport> {
  const orphanPacksRecovered = opts.dryRun ? 0 : await repo.recoverOrphanPacks();
  const points = await repo.listPoints();
  const usage: UsageMap = new Map();
  const failures = await collectUsage(repo, points, usage);
  if (failures.length > 0) {
    const f = failures[0]!;
    throw new VmvaultError(
      'E_CORRUPT',
      `gc stopped: restore point ${f.point} cannot be read (${f.error.message})`,
      {
        hint: "run 'vmvault verify'; gc deletes nothing while a restore point's index is unreadable",
      },
    );
  }
  const index: LocationIndex = repo.index;
  const threshold = opts.repackThreshold ?? 0.2;
  const keep: PackRecord[] = [];
  const remove: { pack: string; size: number }[] = [];
  const repack: { pack: string; live: (typeof keep)[number]['entries'] }[] = [];
  let blobsRemoved = 0;
  let bytesFreed = 0;
  let packsBefore = 0;
  for (const pack of [...index.packIds()]) {
    packsBefore++;
    const entries = index.packEntries(pack)!;
    const live = entries.filter(
      (e) => usage.has(e.digest.toString('latin1')) && index.get(e.digest)?.pack === pack,
    );
    const total = entries.reduce((s, e) => s + e.length, 0);
    const liveBytes = live.reduce((s, e) => s + e.length, 0);
    if (live.length === entries.length) keep.push({ pack, entries: [...entries] });
    else if (live.length === 0) {
      remove.push({ pack, size: total });
      blobsRemoved += entries.length;
      bytesFreed += total;
    } else if ((total - liveBytes) / total >= threshold) {
      repack.push({ pack, live });
      remove.push({ pack, size: total });
      blobsRemoved += entries.length - live.length;
      bytesFreed += total - liveBytes;
    } else keep.push({ pack, entries: [...entries] });
  }
  const report: GcReport = {
    packsBefore,
    packsRemoved: remove.length,
    packsRepacked: repack.length,
    packsWritten: 0,
    blobsRemoved,
    bytesFreed,
    orphanPacksRecovered,
  };
  if (opts.dryRun || remove.length === 0) return report;

  // 2. copy live blobs of mostly-dead packs
  const before = repo.stats.packsWritten;
  const copied: PackRecord[] = [];
  const knownBefore = new Set(index.packIds());
  for (const r of repack) {
    const data = await repo.backend.read(packObjectName(r.pack));
    for (const e of r.live) {
      const stored = Buffer.from(data.subarray(e.offset, e.offset + e.length));
      await repo.addBlobCopy(
        e.type === BlobType.page ? BlobType.page : BlobType.data,
        e.digest,
        stored,
        e.rawLength,
      );
    }
  }
  await repo.flush();
  for (const id of index.packIds()) {
    if (!knownBefore.has(id)) copied.push({ pack: id, entries: [...index.packEntries(id)!] });
  }
  report.packsWritten = repo.stats.packsWritten - before;

  // 3. one new segment for everything that survives, then drop the old ones
  const oldSegments = [...index.segments];
  const survivors = [...keep, ...copied];
  const fresh = await writeSegment(repo.backend, repo.sealKey, survivors);
  for (const s of oldSegments) if (s !== fresh) await repo.backend.remove(s);

  // 4. dead packs
  for (const r of remove) await repo.backend.remove(packObjectName(r.pack));
  return report;
}
