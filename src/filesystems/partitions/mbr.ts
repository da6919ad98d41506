/**
 * Master Boot Record partition tables, including the extended partition's chain of Extended Boot
 * Records (EBRs) that holds logical partitions.
 */
import type { BlockReader } from '../../core/block-reader.js';
import { u8, u32 } from '../util/bytes.js';
import { fsCorrupt } from '../util/errors.js';
import { readAt } from '../util/volume.js';
import type { Partition, PartitionTable } from './types.js';

/** Bytes per sector assumed by MBR (LBA units). */
export const MBR_SECTOR = 512;
/** Most logical partitions followed in an EBR chain before it is treated as hostile. */
export const MAX_LOGICAL_PARTITIONS = 256;

const EXTENDED_TYPES = new Set([0x05, 0x0f, 0x85]);
/** MBR type byte of a GPT protective partition. */
export const PROTECTIVE_TYPE = 0xee;

/** One of the four 16-byte slots of an MBR or EBR. */
export interface MbrEntry {
  status: number;
  type: number;
  /** First sector, relative to whatever the slot is relative to. */
  lba: number;
  sectors: number;
}

/** True when the sector ends in the 0x55 0xAA boot signature. */
export function hasBootSignature(sector: Buffer): boolean {
  return sector.length >= 512 && sector[510] === 0x55 && sector[511] === 0xaa;
}

/** The four partition slots of a boot sector (empty slots included). */
export function parseMbrEntries(sector: Buffer): MbrEntry[] {
  const out: MbrEntry[] = [];
  for (let i = 0; i < 4; i++) {
    const o = 446 + i * 16;
    out.push({
      status: u8(sector, o),
      type: u8(sector, o + 4),
      lba: u32(sector, o + 8),
      sectors: u32(sector, o + 12),
    });
  }
  return out;
}

/**
 * True when sector 0 looks like an MBR: boot signature, every used slot has a status of 0 or 0x80
 * and at least one slot is used.
 */
export function looksLikeMbr(sector: Buffer): boolean {
  if (!hasBootSignature(sector)) return false;
  const entries = parseMbrEntries(sector);
  let used = 0;
  for (const e of entries) {
    if (e.status !== 0 && e.status !== 0x80) return false;
    if (e.type !== 0 && e.sectors !== 0) used++;
  }
  return used > 0;
}

function hexType(t: number): string {
  return `0x${t.toString(16).padStart(2, '0')}`;
}

function checkRange(what: string, startSector: number, sectors: number, disk: BlockReader): void {
  const start = startSector * MBR_SECTOR;
  const size = sectors * MBR_SECTOR;
  if (startSector === 0 || start + size > disk.size) {
    throw fsCorrupt(`${what} (sectors ${startSector}+${sectors}) lies outside the ${disk.size}-byte disk`);
  }
}

/** Reads an MBR partition table (call only when {@link looksLikeMbr} holds for sector 0). */
export async function readMbr(disk: BlockReader, sector0: Buffer): Promise<PartitionTable> {
  const partitions: Partition[] = [];
  const entries = parseMbrEntries(sector0);
  let extended: MbrEntry | undefined;
  entries.forEach((e, i) => {
    if (e.type === 0 || e.sectors === 0) return;
    checkRange(`partition ${i + 1}`, e.lba, e.sectors, disk);
    if (EXTENDED_TYPES.has(e.type)) {
      if (extended) throw fsCorrupt('MBR has more than one extended partition');
      extended = e;
      return;
    }
    partitions.push({
      index: i + 1,
      start: e.lba * MBR_SECTOR,
      size: e.sectors * MBR_SECTOR,
      type: hexType(e.type),
      bootable: e.status === 0x80,
    });
  });
  if (extended) partitions.push(...(await readLogicalPartitions(disk, extended)));
  return {
    scheme: 'mbr',
    sectorSize: MBR_SECTOR,
    diskId: `0x${u32(sector0, 440).toString(16).padStart(8, '0')}`,
    partitions,
  };
}

/** Follows the EBR chain of an extended partition; loops and overlong chains are corrupt. */
async function readLogicalPartitions(disk: BlockReader, ext: MbrEntry): Promise<Partition[]> {
  const out: Partition[] = [];
  const seen = new Set<number>();
  const extEnd = ext.lba + ext.sectors;
  let ebr = ext.lba;
  for (;;) {
    if (seen.has(ebr)) throw fsCorrupt(`EBR chain loops back to sector ${ebr}`);
    if (seen.size >= MAX_LOGICAL_PARTITIONS)
      throw fsCorrupt(`more than ${MAX_LOGICAL_PARTITIONS} logical partitions`);
    seen.add(ebr);
    const sector = await readAt(disk, ebr * MBR_SECTOR, MBR_SECTOR, 'extended boot record');
    if (!hasBootSignature(sector)) throw fsCorrupt(`EBR at sector ${ebr} has no boot signature`);
    const [first, second] = parseMbrEntries(sector);
    if (first && first.type !== 0 && first.sectors !== 0) {
      const start = ebr + first.lba;
      if (start + first.sectors > extEnd) {
        throw fsCorrupt(`logical partition at sector ${start} extends past the extended partition`);
      }
      checkRange(`logical partition ${5 + out.length}`, start, first.sectors, disk);
      out.push({
        index: 5 + out.length,
        start: start * MBR_SECTOR,
        size: first.sectors * MBR_SECTOR,
        type: hexType(first.type),
        bootable: first.status === 0x80,
        logical: true,
      });
    }
    if (!second || second.type === 0 || second.lba === 0 || !EXTENDED_TYPES.has(second.type)) break;
    ebr = ext.lba + second.lba;
    if (ebr >= extEnd) throw fsCorrupt(`next EBR at sector ${ebr} lies outside the extended partition`);
  }
  return out;
}
