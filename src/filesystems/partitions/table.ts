/** Finds the partition table of a disk: GPT (512- or 4096-byte sectors), then MBR. */
import type { BlockReader } from '../../core/block-reader.js';
import { parseFatBootSector } from '../fat/boot-sector.js';
import { fsCorrupt } from '../util/errors.js';
import { readAt } from '../util/volume.js';
import { hasGptSignature, readGpt } from './gpt.js';
import { MBR_SECTOR, PROTECTIVE_TYPE, looksLikeMbr, parseMbrEntries, readMbr } from './mbr.js';
import type { PartitionTable } from './types.js';

/**
 * Reads the partition table of a whole disk, or returns `null` when there is none (an empty disk
 * or a filesystem written straight onto the disk). Throws `E_FS_CORRUPT` for a damaged table.
 */
export async function readPartitionTable(disk: BlockReader): Promise<PartitionTable | null> {
  if (disk.size < MBR_SECTOR) return null;
  const sector0 = await readAt(disk, 0, MBR_SECTOR, 'MBR');
  const protective =
    looksLikeMbr(sector0) && parseMbrEntries(sector0).some((e) => e.type === PROTECTIVE_TYPE);
  for (const ss of [512, 4096]) {
    if (await hasGptSignature(disk, ss)) return readGpt(disk, ss);
  }
  if (protective) {
    // The primary header is gone; the backup at the end of the disk may still be usable.
    for (const ss of [512, 4096]) {
      try {
        return await readGpt(disk, ss);
      } catch {
        // try the next sector size
      }
    }
    throw fsCorrupt('protective MBR without a usable GPT');
  }
  // A FAT boot sector also ends in 55 AA; it is a filesystem, not a partition table.
  if (typeof parseFatBootSector(sector0) !== 'string') return null;
  if (looksLikeMbr(sector0)) return readMbr(disk, sector0);
  return null;
}
