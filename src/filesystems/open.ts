/** Opens whatever supported filesystem a volume holds. */
import type { BlockReader } from '../core/block-reader.js';
import { ExtFilesystem } from './ext/filesystem.js';
import { FatFilesystem } from './fat/filesystem.js';
import { detectFilesystem } from './probe.js';
import type { Filesystem, FilesystemDriver } from './types.js';
import { fsUnsupported, guard } from './util/errors.js';

/** The readers, by the probe type they handle. New formats (NTFS, XFS...) register here. */
export const DRIVERS: ReadonlyArray<FilesystemDriver> = [
  { types: ['ext2', 'ext3', 'ext4'], open: (r) => ExtFilesystem.open(r) },
  { types: ['vfat'], open: (r) => FatFilesystem.open(r) },
];

/**
 * Detects and opens the filesystem on `reader` (a partition or whole-disk volume). Throws
 * `E_FS_UNSUPPORTED` for recognised formats without a reader (NTFS, XFS, LVM2...) and unknown
 * contents, `E_FS_CORRUPT` when the format is recognised but damaged.
 */
export async function openFilesystem(reader: BlockReader): Promise<Filesystem> {
  return guard('open filesystem', async () => {
    const d = await detectFilesystem(reader);
    const driver = DRIVERS.find((x) => x.types.includes(d.type));
    if (!driver) throw fsUnsupported(`cannot read a ${d.type} volume`, { type: d.type });
    return driver.open(reader);
  });
}
