/**
 * The file index: every file of every filesystem in a restore point, with its metadata and the
 * chunks its data lives in, built at backup time from the source (cheap: metadata only) and
 * stored in the catalog for `vmvault find` and cheap later restores.
 */
import { type BlockReader, VmvaultError } from '../core/index.js';
import { openFilesystem, SliceReader } from '../filesystems/index.js';
import type { DiskRecord } from '../repository/index.js';
import { listVolumes } from './disk-tree.js';

/** One file as the catalog stores it. */
export interface FileRecord {
  /** View path of the volume ("part1"). */
  volume: string;
  /** Path inside the filesystem ("/etc/hosts"). */
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  mode: number;
  uid: number;
  gid: number;
  mtimeMs: number;
  inode: number;
  /** Chunk numbers of the file's data on its disk, as ranges: "12-15,40". Empty for no data. */
  chunks: string;
  /** A symlink's target (absent for other entries). */
  target?: string;
}

/** Formats sorted chunk numbers as "a-b,c" ranges. */
export function formatChunkRanges(chunks: readonly number[]): string {
  const out: string[] = [];
  for (let i = 0; i < chunks.length; ) {
    let j = i;
    while (j + 1 < chunks.length && chunks[j + 1]! <= chunks[j]! + 1) j++;
    out.push(chunks[i] === chunks[j] ? String(chunks[i]) : `${chunks[i]}-${chunks[j]}`);
    i = j + 1;
  }
  return out.join(',');
}

/** Limits that keep indexing cheap on huge or hostile filesystems. */
const MAX_FILES = 2_000_000;

/**
 * Walks every browsable filesystem on `disks` and yields a record per entry. Volumes that cannot
 * be read are reported through `onSkip` and skipped: indexing never fails a backup.
 */
export async function* indexFiles(
  disks: readonly { disk: DiskRecord; reader: BlockReader }[],
  onSkip?: (volume: string, err: unknown) => void,
): AsyncGenerator<FileRecord> {
  let count = 0;
  let vols: Awaited<ReturnType<typeof listVolumes>>;
  try {
    vols = await listVolumes(disks);
  } catch (err) {
    onSkip?.('(partition table)', err);
    return;
  }
  const readers = new Map(disks.map((d) => [d.disk.name, d.reader]));
  for (const v of vols) {
    if (!v.openable) continue;
    const cs = v.disk.chunkSize;
    try {
      const fs = await openFilesystem(
        new SliceReader(readers.get(v.disk.name)!, v.volume.start, v.volume.size),
      );
      for await (const e of fs.walk()) {
        if (++count > MAX_FILES) throw new VmvaultError('E_FS_CORRUPT', `more than ${MAX_FILES} files`);
        let chunks = '';
        if (e.type === 'file' && e.size > 0) {
          const nums: number[] = [];
          for (const x of await (e.extents ? e.extents() : fs.extents(e.path))) {
            const a = Math.floor((v.volume.start + x.diskOffset) / cs);
            const b = Math.floor((v.volume.start + x.diskOffset + x.length - 1) / cs);
            for (let c = a; c <= b; c++) if (nums[nums.length - 1] !== c) nums.push(c);
          }
          nums.sort((x, y) => x - y);
          chunks = formatChunkRanges(nums);
        }
        yield {
          volume: v.path,
          path: e.path,
          type: e.type,
          size: e.size,
          mode: e.mode,
          uid: e.uid,
          gid: e.gid,
          mtimeMs: e.mtime.getTime(),
          inode: e.inode,
          chunks,
          ...(e.type === 'symlink'
            ? { target: await (e.readlink ? e.readlink() : fs.readlink(e.path)) }
            : {}),
        };
      }
    } catch (err) {
      onSkip?.(v.path, err);
    }
  }
}
