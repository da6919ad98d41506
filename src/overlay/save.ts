/**
 * Saving an overlay as a new restore point: the mounted point's disk with the overlay's chunks
 * in place of its own. It is an ordinary backup ({@link backupDisk} + {@link commitPoint}) of an
 * {@link OverlaySource}: only the overlay's data chunks are read and stored, the rest of the tree
 * is taken from the parent point (whole leaf pages where nothing changed), and the usual write
 * order holds (packs, index segment, then the manifest).
 */
import type { BackupProgress, BackupResult } from '../backup/index.js';
import { VmvaultError } from '../core/index.js';
import type { CodecPool, DiskRecord, Repository, RestorePoint } from '../repository/index.js';
import { PointReader } from '../restore/index.js';
import type { Overlay } from './overlay.js';
import { OverlaySource } from './overlay-source.js';

/** Tag every point saved from an overlay carries. */
export const FROM_OVERLAY_TAG = 'from-overlay';

/** Options of {@link saveOverlay}. */
export interface SaveOverlayOptions {
  /** Name of the new point; default the mounted point's name. */
  name?: string;
  /** Extra tags; `from-overlay` is always added. */
  tags?: string[];
  onProgress?: (p: BackupProgress & { disk: string }) => void;
}

/**
 * Commits a new restore point from `overlay` over `point` (the point it was created for). Its
 * parent is `point`; disks of the point other than the overlay's are kept as they are. Call it
 * while no client writes to the overlay (after the NBD server stopped), or the new point may
 * hold a mix of older and newer writes. The caller holds a shared repository lock.
 */
export async function saveOverlay(
  repo: Repository,
  pool: CodecPool,
  point: RestorePoint,
  overlay: Overlay,
  opts: SaveOverlayOptions = {},
): Promise<BackupResult> {
  // Loaded on use: the backup pipeline (sources, filesystems, QEMU helpers) is large, and a
  // writable mount must start fast.
  const { backupDisk, commitPoint, vmRecordOf } = await import('../backup/index.js');
  if (overlay.pointId !== point.id) {
    throw new VmvaultError(
      'E_USAGE',
      `overlay ${overlay.path} belongs to restore point ${overlay.pointId}, not ${point.id}`,
    );
  }
  const disk = point.disks.find((d) => d.name === overlay.disk);
  if (!disk) {
    throw new VmvaultError('E_NOT_FOUND', `restore point ${point.id} has no disk ${overlay.disk}`);
  }
  if (disk.size !== overlay.size || disk.chunkSize !== overlay.chunkSize) {
    throw new VmvaultError(
      'E_USAGE',
      `overlay ${overlay.path} does not fit disk ${disk.name} of ${point.id}`,
    );
  }
  if (disk.chunkSize !== repo.config.chunkSize) {
    throw new VmvaultError(
      'E_UNSUPPORTED',
      `restore point ${point.id} was cut in ${disk.chunkSize}-byte chunks; the repository now uses ${repo.config.chunkSize}`,
    );
  }
  const started = Date.now();
  const written0 = repo.stats.bytesWritten;
  const counts = overlay.counts();
  const base = new PointReader(repo, disk, { pool, readAheadChunks: 0, cacheBytes: 8 << 20 });
  const source = new OverlaySource(overlay, base);
  const record = await backupDisk(repo, pool, source, {
    name: disk.name,
    method: 'bitmap',
    reason:
      `saved from overlay ${overlay.path} of restore point ${point.id}: ${counts.dataChunks} chunks written ` +
      `and ${counts.zeroChunks} zeroed there; every other chunk taken from ${point.id} without reading`,
    parent: disk,
    ...(opts.onProgress
      ? { onProgress: (p: BackupProgress) => opts.onProgress!({ ...p, disk: disk.name }) }
      : {}),
  });
  if (disk.priorities) record.priorities = disk.priorities;
  const disks: DiskRecord[] = point.disks.map((d) => (d === disk ? record : unchangedDisk(d, point.id)));
  const tags = [...new Set([...(opts.tags ?? []), FROM_OVERLAY_TAG])];
  const vm = vmRecordOf(point);
  const saved = await commitPoint(repo, {
    name: opts.name ?? point.name,
    time: new Date(started).toISOString(),
    started,
    parent: point,
    disks,
    tags,
    // The VM's configuration still describes the disks; its change tracking does not (the
    // guest's bitmaps know nothing of the overlay), so the next VM backup must read everything.
    ...(vm ? { vm: { ...vm, tracking: {} } } : {}),
  });
  return { point: saved, bytesStored: repo.stats.bytesWritten - written0, bytesRead: record.stats.bytesRead };
}

/** A disk of the parent point that the overlay did not touch, carried over as it is. */
function unchangedDisk(d: DiskRecord, parentId: string): DiskRecord {
  return {
    ...d,
    method: 'bitmap',
    reason: `not mounted with the overlay: the same as in restore point ${parentId}`,
    stats: { bytesRead: 0, bytesStored: 0, chunksNew: 0, chunksReused: 0, chunksZero: 0 },
  };
}
