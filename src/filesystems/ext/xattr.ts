/**
 * Extended attributes: the in-inode area after `i_extra_isize` (magic, entries, values relative to
 * the first entry) and the external xattr block named by `i_file_acl` (32-byte header, entries,
 * values relative to the block start).
 */
import { u8, u16, u32 } from '../util/bytes.js';
import { fsCorrupt } from '../util/errors.js';

/** `h_magic` / in-inode header magic. */
export const XATTR_MAGIC = 0xea020000;

const PREFIXES: Record<number, string> = {
  1: 'user.',
  2: 'system.posix_acl_access',
  3: 'system.posix_acl_default',
  4: 'trusted.',
  6: 'security.',
  7: 'system.',
  8: 'system.richacl',
};

/** One attribute as stored. */
export interface RawXattr {
  name: string;
  /** Value bytes, or undefined when it lives in an EA inode (`valueInode`). */
  value: Buffer | undefined;
  valueInode: number;
  valueSize: number;
  /** Offset of the value inside the region it was parsed from. */
  valueOffset: number;
}

/**
 * Parses entries starting at `entriesStart` of `region`; values are found at `valueBase +
 * e_value_offs`. Every offset and size is bounds-checked against the region.
 */
export function parseXattrEntries(region: Buffer, entriesStart: number, valueBase: number): RawXattr[] {
  const out: RawXattr[] = [];
  let off = entriesStart;
  while (off + 4 <= region.length && u32(region, off) !== 0) {
    if (off + 16 > region.length) throw fsCorrupt('xattr entry runs past its area');
    const nameLen = u8(region, off);
    const index = u8(region, off + 1);
    const valueOffs = u16(region, off + 2);
    const valueInode = u32(region, off + 4);
    const valueSize = u32(region, off + 8);
    if (off + 16 + nameLen > region.length) throw fsCorrupt('xattr name runs past its area');
    const suffix = region.subarray(off + 16, off + 16 + nameLen).toString('latin1');
    const prefix = PREFIXES[index];
    let value: Buffer | undefined;
    const valueOffset = valueBase + valueOffs;
    if (valueInode === 0) {
      if (valueOffset + valueSize > region.length)
        throw fsCorrupt(`xattr ${suffix} value lies outside its area`);
      value = region.subarray(valueOffset, valueOffset + valueSize);
    }
    if (prefix !== undefined) out.push({ name: prefix + suffix, value, valueInode, valueSize, valueOffset });
    off += (16 + nameLen + 3) & ~3;
  }
  return out;
}

/** Attributes stored in the inode body (after `128 + i_extra_isize`). */
export function inodeXattrs(raw: Buffer): { entries: RawXattr[]; regionOffset: number } {
  if (raw.length <= 128) return { entries: [], regionOffset: 0 };
  const start = 128 + u16(raw, 0x80);
  if (start + 4 > raw.length || u32(raw, start) !== XATTR_MAGIC) return { entries: [], regionOffset: start };
  const region = raw.subarray(start);
  return { entries: parseXattrEntries(region, 4, 4), regionOffset: start };
}

/** Attributes of an external xattr block. */
export function blockXattrs(block: Buffer): RawXattr[] {
  if (u32(block, 0) !== XATTR_MAGIC) throw fsCorrupt('xattr block has a bad magic number');
  if (u32(block, 8) !== 1) throw fsCorrupt('xattr block spans more than one block');
  return parseXattrEntries(block, 32, 0);
}
