/**
 * Block priorities: the chunks a restore or live mount should fetch first, i.e. the partition
 * table, each filesystem's superblock, group descriptors and first inode table, the root
 * directory, and the boot files (`/boot`, the kernel and init links, `/EFI`). Cheap by design:
 * a few dozen small reads of the fleecing export, never a walk of the whole filesystem.
 */
import type { BlockReader } from '../../core/index.js';
import {
  ExtFilesystem,
  type Filesystem,
  openFilesystem,
  probeDisk,
  SliceReader,
  type Volume,
} from '../../filesystems/index.js';

/** Files (or directories, listed one level deep) that booting needs. */
const BOOT_PATHS = [
  '/boot',
  '/EFI',
  '/efi',
  '/vmlinuz',
  '/initrd.img',
  '/sbin/init',
  '/etc/fstab',
  '/bzImage',
];
/** Most files looked at in one boot directory. */
const MAX_BOOT_FILES = 256;

/** Merges `[start, end)` byte ranges into sorted, disjoint chunk-index ranges. */
export function toChunkRanges(
  byteRanges: readonly [number, number][],
  chunkSize: number,
  size: number,
): [number, number][] {
  const chunks = byteRanges
    .map(
      ([a, b]) =>
        [Math.floor(Math.max(0, a) / chunkSize), Math.ceil(Math.min(size, b) / chunkSize)] as [
          number,
          number,
        ],
    )
    .filter(([a, b]) => b > a)
    .sort((x, y) => x[0] - y[0]);
  const out: [number, number][] = [];
  for (const [a, b] of chunks) {
    const last = out[out.length - 1];
    if (last && a <= last[1]) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

/** Byte ranges of a volume's metadata that are worth fetching first. */
async function metadataRanges(disk: BlockReader, vol: Volume, fs: Filesystem): Promise<[number, number][]> {
  const out: [number, number][] = [];
  if (fs instanceof ExtFilesystem) {
    const sb = fs.superblock;
    const bs = sb.blockSize;
    const gdtBlocks = Math.ceil((sb.groupCount * sb.descSize) / bs);
    const metaEnd = (sb.firstDataBlock + 1 + gdtBlocks) * bs;
    out.push([vol.start, vol.start + metaEnd]);
    // Group 0's inode table (root directory, journal and reserved inodes).
    const desc = await disk.read(vol.start + (sb.firstDataBlock + 1) * bs, Math.min(sb.descSize, 64));
    let table = desc.readUInt32LE(8);
    if (sb.descSize >= 64) table += desc.readUInt32LE(0x28) * 2 ** 32;
    const tableBytes = Math.min(sb.inodesPerGroup * sb.inodeSize, 4 << 20);
    if (table > 0 && table * bs + tableBytes <= vol.size)
      out.push([vol.start + table * bs, vol.start + table * bs + tableBytes]);
  } else {
    // FAT: boot sector, FATs and (FAT12/16) root directory lie at the start.
    out.push([vol.start, vol.start + Math.min(vol.size, 4 << 20)]);
  }
  return out;
}

/** Byte ranges of the boot files and of the directories leading to them. */
async function bootFileRanges(vol: Volume, fs: Filesystem): Promise<[number, number][]> {
  const out: [number, number][] = [];
  const addFile = async (path: string): Promise<void> => {
    for (const e of await fs.extents(path).catch(() => [])) {
      out.push([vol.start + e.diskOffset, vol.start + e.diskOffset + e.length]);
    }
  };
  for (const p of BOOT_PATHS) {
    const st = await fs.stat(p).catch(() => undefined);
    if (!st) continue;
    if (st.type === 'file') await addFile(p);
    else if (st.type === 'symlink') {
      const target = await fs.readlink(p).catch(() => '');
      if (target) await addFile(target.startsWith('/') ? target : `/${target}`);
    } else if (st.type === 'dir') {
      const entries = (await fs.readdir(p).catch(() => [])).slice(0, MAX_BOOT_FILES);
      for (const e of entries) {
        if (e.type === 'file') await addFile(`${p}/${e.name}`);
        else if (e.type === 'dir') {
          for (const f of (await fs.readdir(`${p}/${e.name}`).catch(() => [])).slice(0, MAX_BOOT_FILES)) {
            if (f.type === 'file') await addFile(`${p}/${e.name}/${f.name}`);
          }
        }
      }
    }
  }
  return out;
}

/**
 * Chunk ranges holding the partition table, filesystem metadata and boot files of `disk`.
 * Volumes that cannot be read are skipped; the partition-table chunk is always included.
 */
export async function blockPriorities(disk: BlockReader, chunkSize: number): Promise<[number, number][]> {
  const ranges: [number, number][] = [[0, Math.min(disk.size, 64 << 10)]];
  // A GPT keeps its backup header and entries in the last 33 sectors.
  if (disk.size > 1 << 20) ranges.push([disk.size - 33 * 512, disk.size]);
  const volumes = await probeDisk(disk).catch(() => [] as Volume[]);
  for (const vol of volumes) {
    if (vol.type === 'unknown' || vol.type === 'swap') continue;
    const view =
      vol.index === 0 && vol.start === 0 && vol.size === disk.size
        ? disk
        : new SliceReader(disk, vol.start, vol.size);
    let fs: Filesystem;
    try {
      fs = await openFilesystem(view);
    } catch {
      ranges.push([vol.start, vol.start + Math.min(vol.size, 1 << 20)]);
      continue;
    }
    ranges.push(...(await metadataRanges(disk, vol, fs).catch(() => [])));
    ranges.push(...(await bootFileRanges(vol, fs)));
  }
  return toChunkRanges(ranges, chunkSize, disk.size);
}
