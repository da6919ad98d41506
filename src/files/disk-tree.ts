/**
 * The file view of a restore point: one top-level directory per filesystem found (per
 * partition in partition order, and per disk when a point has several), each opened lazily
 * through a {@link PointReader}, so browsing touches only the chunks the metadata needs.
 *
 *   /part1/etc/hosts          single-disk point, first partition
 *   /disk/etc/hosts           single-disk point, filesystem on the whole disk
 *   /vdb/part2/var/log        point with several disks
 */
import { type BlockReader, VmvaultError } from '../core/index.js';
import {
  type Filesystem,
  openFilesystem,
  probeDisk,
  SliceReader,
  type Volume,
} from '../filesystems/index.js';
import type { DiskRecord, Repository, RestorePoint } from '../repository/index.js';
import { PointReader } from '../restore/index.js';
import { splitPath } from './view-path.js';

export { splitPath };

/** Filesystem types vmvault can open. */
const OPENABLE = new Set(['ext2', 'ext3', 'ext4', 'vfat']);

/** A filesystem (or unreadable volume) in a restore point's file view. */
export interface VolumeEntry {
  /** Path of the volume's directory in the view ("part1", "vdb/part2", "disk"). */
  path: string;
  disk: DiskRecord;
  volume: Volume;
  /** True when vmvault can browse it. */
  openable: boolean;
}

/** Directory name of a volume inside its disk. */
export function volumeName(v: Volume): string {
  return v.index === 0 ? 'disk' : `part${v.index}`;
}

/** Lists the volumes of every disk of `disks`, given a reader per disk. */
export async function listVolumes(
  disks: readonly { disk: DiskRecord; reader: BlockReader }[],
): Promise<VolumeEntry[]> {
  const out: VolumeEntry[] = [];
  for (const { disk, reader } of disks) {
    const vols = await probeDisk(reader);
    for (const v of vols) {
      const name = volumeName(v);
      out.push({
        path: disks.length > 1 ? `${disk.name}/${name}` : name,
        disk,
        volume: v,
        openable: OPENABLE.has(v.type),
      });
    }
  }
  return out;
}

/** Browses the files of one restore point. */
export class PointFiles {
  private readonly readers = new Map<string, PointReader>();
  private volumesCache: VolumeEntry[] | null = null;
  private readonly fsCache = new Map<string, Promise<Filesystem>>();

  constructor(
    private readonly repo: Repository,
    readonly point: RestorePoint,
  ) {}

  /** The reader of one disk (shared by every volume on it). */
  reader(disk: DiskRecord): PointReader {
    let r = this.readers.get(disk.name);
    if (!r) {
      // Files are read by extents, not streamed: read-ahead would only fetch chunks nobody needs.
      r = new PointReader(this.repo, disk, { readAheadChunks: 0 });
      this.readers.set(disk.name, r);
    }
    return r;
  }

  /** Bytes of chunk data fetched so far (for cost checks). */
  get chunkBytesFetched(): number {
    let n = 0;
    for (const r of this.readers.values()) n += r.stats.chunkBytesFetched;
    return n;
  }

  /** Volumes found in the point. */
  async volumes(): Promise<VolumeEntry[]> {
    this.volumesCache ??= await listVolumes(
      this.point.disks.map((disk) => ({ disk, reader: this.reader(disk) })),
    );
    return this.volumesCache;
  }

  /** Opens the filesystem of a volume. */
  filesystem(v: VolumeEntry): Promise<Filesystem> {
    let fs = this.fsCache.get(v.path);
    if (!fs) {
      if (!v.openable) {
        return Promise.reject(
          new VmvaultError(
            'E_FS_UNSUPPORTED',
            `${v.path} holds ${v.volume.type}, which vmvault cannot browse yet`,
          ),
        );
      }
      fs = openFilesystem(new SliceReader(this.reader(v.disk), v.volume.start, v.volume.size));
      this.fsCache.set(v.path, fs);
    }
    return fs;
  }

  /**
   * Resolves a view path: the volume it falls in and the path inside that filesystem, or
   * `volume: null` for a directory above the volumes (the root, or a disk's directory).
   */
  async resolve(path: string): Promise<{ volume: VolumeEntry | null; inner: string; prefix: string[] }> {
    const parts = splitPath(path);
    const vols = await this.volumes();
    for (const v of vols) {
      const vp = v.path.split('/');
      if (vp.every((p, i) => parts[i] === p)) {
        return { volume: v, inner: `/${parts.slice(vp.length).join('/')}`, prefix: vp };
      }
    }
    if (parts.length === 0 || (parts.length === 1 && vols.some((v) => v.path.startsWith(`${parts[0]}/`)))) {
      return { volume: null, inner: '/', prefix: parts };
    }
    throw new VmvaultError('E_NOT_FOUND', `${path} is not in restore point ${this.point.id}`, {
      hint: `its top-level directories: ${[...new Set(vols.map((v) => v.path.split('/')[0]))].join(', ') || 'none (no filesystem found)'}`,
    });
  }
}
