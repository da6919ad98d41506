/**
 * GUID Partition Table: header at LBA 1 (backup at the last LBA), entry array, CRC32 checks of
 * both. The primary copy is preferred; a damaged primary falls back to the backup.
 */
import type { BlockReader } from '../../core/block-reader.js';
import { guidString, isZero, u32, u64, utf16z } from '../util/bytes.js';
import { crc32 } from '../util/crc.js';
import { fsCorrupt } from '../util/errors.js';
import { readAt } from '../util/volume.js';
import type { Partition, PartitionTable } from './types.js';

const SIGNATURE = 'EFI PART';
/** Most partition entries accepted (the usual count is 128). */
export const MAX_GPT_ENTRIES = 4096;
/** Largest entry array accepted, in bytes. */
export const MAX_GPT_ARRAY = 4 * 1024 * 1024;

interface GptHeader {
  myLba: number;
  alternateLba: number;
  firstUsable: number;
  lastUsable: number;
  diskGuid: string;
  entriesLba: number;
  entryCount: number;
  entrySize: number;
  entriesCrc: number;
}

/** True when the sector at LBA 1 (for this sector size) carries the GPT signature. */
export async function hasGptSignature(disk: BlockReader, sectorSize: number): Promise<boolean> {
  if (disk.size < sectorSize * 2) return false;
  const b = await readAt(disk, sectorSize, 8, 'GPT header');
  return b.toString('latin1') === SIGNATURE;
}

/** Parses and checks one header; returns a reason string when it is not usable. */
async function readHeader(disk: BlockReader, lba: number, ss: number): Promise<GptHeader | string> {
  if (!Number.isSafeInteger(lba) || lba < 1 || (lba + 1) * ss > disk.size)
    return `header LBA ${lba} is off the disk`;
  const sec = await readAt(disk, lba * ss, ss, 'GPT header');
  if (sec.subarray(0, 8).toString('latin1') !== SIGNATURE) return `no GPT signature at LBA ${lba}`;
  const headerSize = u32(sec, 12);
  if (headerSize < 92 || headerSize > ss) return `bad header size ${headerSize}`;
  const copy = Buffer.from(sec.subarray(0, headerSize));
  copy.writeUInt32LE(0, 16);
  if (crc32(copy) !== u32(sec, 16)) return `header CRC mismatch at LBA ${lba}`;
  const h: GptHeader = {
    myLba: u64(sec, 24),
    alternateLba: u64(sec, 32),
    firstUsable: u64(sec, 40),
    lastUsable: u64(sec, 48),
    diskGuid: guidString(sec.subarray(56, 72)),
    entriesLba: u64(sec, 72),
    entryCount: u32(sec, 80),
    entrySize: u32(sec, 84),
    entriesCrc: u32(sec, 88),
  };
  if (h.myLba !== lba) return `header at LBA ${lba} says it is at ${h.myLba}`;
  if (h.entrySize < 128 || h.entrySize % 8 !== 0 || h.entrySize > 4096)
    return `bad entry size ${h.entrySize}`;
  if (h.entryCount > MAX_GPT_ENTRIES || h.entryCount * h.entrySize > MAX_GPT_ARRAY) {
    return `absurd entry count ${h.entryCount}`;
  }
  if (h.entriesLba * ss + h.entryCount * h.entrySize > disk.size) return 'entry array lies off the disk';
  return h;
}

async function readEntries(disk: BlockReader, h: GptHeader, ss: number): Promise<Partition[] | string> {
  const arr = await readAt(disk, h.entriesLba * ss, h.entryCount * h.entrySize, 'GPT entries');
  if (crc32(arr) !== h.entriesCrc) return 'entry array CRC mismatch';
  const out: Partition[] = [];
  for (let i = 0; i < h.entryCount; i++) {
    const e = arr.subarray(i * h.entrySize, (i + 1) * h.entrySize);
    const typeGuid = e.subarray(0, 16);
    if (isZero(typeGuid)) continue;
    const first = u64(e, 32);
    const last = u64(e, 40);
    if (last < first || (last + 1) * ss > disk.size) {
      throw fsCorrupt(`GPT partition ${i + 1} (LBA ${first}-${last}) lies outside the disk`);
    }
    out.push({
      index: i + 1,
      start: first * ss,
      size: (last - first + 1) * ss,
      type: guidString(typeGuid),
      uuid: guidString(e.subarray(16, 32)),
      name: utf16z(e.subarray(56, 128)),
    });
  }
  return out;
}

/**
 * Reads the GPT of a disk with the given logical sector size. Uses the primary header and entries
 * when both checksums match, otherwise the backup; throws `E_FS_CORRUPT` when neither is usable.
 */
export async function readGpt(disk: BlockReader, ss: number): Promise<PartitionTable> {
  const problems: string[] = [];
  const primary = await readHeader(disk, 1, ss);
  const candidates: Array<{ lba: number; which: 'primary' | 'backup' }> = [];
  const lastLba = Math.floor(disk.size / ss) - 1;
  if (typeof primary === 'string') {
    problems.push(`primary: ${primary}`);
    candidates.push({ lba: lastLba, which: 'backup' });
  } else {
    const entries = await readEntries(disk, primary, ss);
    if (typeof entries !== 'string') {
      return {
        scheme: 'gpt',
        sectorSize: ss,
        diskId: primary.diskGuid,
        header: 'primary',
        partitions: entries,
      };
    }
    problems.push(`primary: ${entries}`);
    candidates.push({ lba: primary.alternateLba, which: 'backup' });
    if (primary.alternateLba !== lastLba) candidates.push({ lba: lastLba, which: 'backup' });
  }
  for (const c of candidates) {
    const h = await readHeader(disk, c.lba, ss);
    if (typeof h === 'string') {
      problems.push(`backup: ${h}`);
      continue;
    }
    const entries = await readEntries(disk, h, ss);
    if (typeof entries === 'string') {
      problems.push(`backup: ${entries}`);
      continue;
    }
    return { scheme: 'gpt', sectorSize: ss, diskId: h.diskGuid, header: 'backup', partitions: entries };
  }
  throw fsCorrupt(`no usable GPT: ${problems.join('; ')}`);
}
