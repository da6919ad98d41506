/** Identifies what a volume holds and lists the volumes of a disk. */
import type { BlockReader } from '../core/block-reader.js';
import { EXT_MAGIC, SUPERBLOCK_OFFSET, extFlavour, hasExtMagic } from './ext/superblock.js';
import { parseFatBootSector } from './fat/boot-sector.js';
import { readPartitionTable } from './partitions/table.js';
import type { FsType, Volume } from './types.js';
import { cString, u32, uuidString } from './util/bytes.js';
import { SliceReader, readAt } from './util/volume.js';

/** What {@link detectFilesystem} found. */
export interface Detected {
  type: FsType;
  label?: string;
  uuid?: string;
}

/**
 * Identifies the filesystem on a volume from its magic numbers (reads at most the first 8 KiB).
 * Recognises ext2/3/4 and FAT (which can be opened) and NTFS, XFS, LVM2 and swap (named only).
 */
export async function detectFilesystem(reader: BlockReader): Promise<Detected> {
  const head = await readAt(reader, 0, Math.min(reader.size, 8192), 'volume header');
  if (head.length >= SUPERBLOCK_OFFSET + 1024) {
    const sb = head.subarray(SUPERBLOCK_OFFSET, SUPERBLOCK_OFFSET + 1024);
    if (hasExtMagic(sb) && sb.readUInt16LE(0x38) === EXT_MAGIC) {
      const flags = { compat: u32(sb, 0x5c), incompat: u32(sb, 0x60), roCompat: u32(sb, 0x64) };
      const label = cString(sb.subarray(0x78, 0x88));
      return {
        type: extFlavour(flags),
        uuid: uuidString(sb.subarray(0x68, 0x78)),
        ...(label ? { label } : {}),
      };
    }
  }
  if (head.length >= 512) {
    if (head.subarray(3, 11).toString('latin1') === 'NTFS    ') {
      const serial = head.readBigUInt64LE(0x48).toString(16).toUpperCase().padStart(16, '0');
      return { type: 'ntfs', uuid: serial };
    }
    const fat = parseFatBootSector(head.subarray(0, 512));
    if (typeof fat !== 'string') {
      return {
        type: 'vfat',
        ...(fat.label ? { label: fat.label } : {}),
        ...(fat.volumeId ? { uuid: fat.volumeId } : {}),
      };
    }
    if (head.subarray(0, 4).toString('latin1') === 'XFSB') {
      const label = cString(head.subarray(108, 120));
      return { type: 'xfs', uuid: uuidString(head.subarray(32, 48)), ...(label ? { label } : {}) };
    }
  }
  for (let s = 0; s < 4 && (s + 1) * 512 <= head.length; s++) {
    const sec = head.subarray(s * 512, s * 512 + 512);
    if (
      sec.subarray(0, 8).toString('latin1') === 'LABELONE' &&
      sec.subarray(24, 32).toString('latin1') === 'LVM2 001'
    ) {
      return { type: 'lvm2' };
    }
  }
  if (head.length >= 4096 && head.subarray(4086, 4096).toString('latin1') === 'SWAPSPACE2')
    return { type: 'swap' };
  return { type: 'unknown' };
}

/**
 * Lists the volumes of a whole disk in partition order: one per partition of an MBR (logical
 * partitions from index 5) or GPT, or a single volume with index 0 when the disk has no table.
 */
export async function probeDisk(disk: BlockReader): Promise<Volume[]> {
  const table = await readPartitionTable(disk);
  if (!table) {
    const d = await detectFilesystem(disk);
    return [{ index: 0, start: 0, size: disk.size, ...d }];
  }
  const out: Volume[] = [];
  const sorted = [...table.partitions].sort((a, b) => a.index - b.index);
  for (const p of sorted) {
    const d =
      p.size > 0
        ? await detectFilesystem(new SliceReader(disk, p.start, p.size))
        : { type: 'unknown' as const };
    const v: Volume = { index: p.index, start: p.start, size: p.size, ...d, partitionType: p.type };
    if (p.name !== undefined) v.partitionName = p.name;
    if (p.uuid !== undefined) v.partitionUuid = p.uuid;
    out.push(v);
  }
  return out;
}
