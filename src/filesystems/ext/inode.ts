/**
 * ext inodes: 128-byte base structure plus the `i_extra_isize` tail of larger inodes (nanosecond
 * timestamps, high checksum half), with CRC-32C verification under `metadata_csum`.
 */
import type { EntryType } from '../types.js';
import { hiLo, i32, u16, u32 } from '../util/bytes.js';
import { crc32cRaw, le32 } from '../util/crc.js';
import { fsCorrupt } from '../util/errors.js';
import type { Superblock } from './superblock.js';

/** Inode flag bits (`i_flags`). */
export const INODE_FLAGS = {
  INDEX: 0x1000,
  HUGE_FILE: 0x40000,
  EXTENTS: 0x80000,
  EA_INODE: 0x200000,
  INLINE_DATA: 0x10000000,
} as const;

/** Largest file an ext filesystem can describe: 2^32 blocks. */
const MAX_BLOCKS = 2 ** 32;

/** A decoded inode. */
export interface Inode {
  ino: number;
  mode: number;
  type: EntryType;
  uid: number;
  gid: number;
  size: number;
  atime: Date;
  ctime: Date;
  mtime: Date;
  links: number;
  /** `i_blocks` in 512-byte units. */
  blocks512: number;
  flags: number;
  /** The 60-byte `i_block` area: extent root, block pointers, fast symlink or inline data. */
  iblock: Buffer;
  generation: number;
  /** Block number of the external xattr block, 0 when none. */
  fileAcl: number;
  /** The whole on-disk inode (`s_inode_size` bytes). */
  raw: Buffer;
  /** Byte offset of the inode on the volume. */
  diskOffset: number;
  /** Checksum seed for this inode's extent blocks and directory blocks. */
  csumSeed: number;
}

/** File type from the mode bits. */
export function modeType(mode: number): EntryType {
  switch (mode & 0o170000) {
    case 0o100000:
      return 'file';
    case 0o040000:
      return 'dir';
    case 0o120000:
      return 'symlink';
    default:
      return 'other';
  }
}

function time(raw: Buffer, off: number, extraOff: number, extraIsize: number): Date {
  let secs = i32(raw, off);
  let nsec = 0;
  if (extraOff + 4 <= 128 + extraIsize && extraOff + 4 <= raw.length) {
    const extra = u32(raw, extraOff);
    secs += (extra & 3) * 2 ** 32;
    nsec = extra >>> 2;
  }
  return new Date(secs * 1000 + Math.floor(nsec / 1e6));
}

/** Decodes inode `ino` from its raw bytes; verifies its checksum when the filesystem has one. */
export function parseInode(sb: Superblock, ino: number, raw: Buffer, diskOffset: number): Inode {
  const extraIsize = raw.length > 128 ? u16(raw, 0x80) : 0;
  if (raw.length > 128 && (extraIsize > raw.length - 128 || extraIsize % 4 !== 0)) {
    throw fsCorrupt(`inode ${ino} has invalid extra size ${extraIsize}`, { inode: ino });
  }
  const generation = u32(raw, 0x64);
  const inodeSeed = crc32cRaw(crc32cRaw(sb.csumSeed, le32(ino)), le32(generation));
  if (sb.metadataCsum) verifyInodeChecksum(ino, raw, extraIsize, inodeSeed);
  const mode = u16(raw, 0);
  const size = hiLo(u32(raw, 0x6c), u32(raw, 4));
  if (size > MAX_BLOCKS * sb.blockSize)
    throw fsCorrupt(`inode ${ino} has absurd size ${size}`, { inode: ino });
  return {
    ino,
    mode,
    type: modeType(mode),
    uid: u16(raw, 2) + u16(raw, 0x78) * 0x10000,
    gid: u16(raw, 0x18) + u16(raw, 0x7a) * 0x10000,
    size,
    atime: time(raw, 0x8, 0x8c, extraIsize),
    ctime: time(raw, 0xc, 0x84, extraIsize),
    mtime: time(raw, 0x10, 0x88, extraIsize),
    links: u16(raw, 0x1a),
    blocks512: hiLo(u16(raw, 0x74), u32(raw, 0x1c)),
    flags: u32(raw, 0x20),
    iblock: raw.subarray(0x28, 0x28 + 60),
    generation,
    fileAcl: hiLo(u16(raw, 0x76), u32(raw, 0x68)),
    raw,
    diskOffset,
    csumSeed: inodeSeed,
  };
}

function verifyInodeChecksum(ino: number, raw: Buffer, extraIsize: number, seed: number): void {
  const copy = Buffer.from(raw);
  const hasHi = raw.length > 128 && extraIsize >= 4;
  copy.writeUInt16LE(0, 0x7c);
  if (hasHi) copy.writeUInt16LE(0, 0x82);
  const c = crc32cRaw(seed, copy);
  const stored = u16(raw, 0x7c) + (hasHi ? u16(raw, 0x82) * 0x10000 : 0);
  const got = hasHi ? c : c & 0xffff;
  if (stored !== got) {
    throw fsCorrupt(
      `inode ${ino} checksum mismatch (stored ${stored.toString(16)}, computed ${got.toString(16)})`,
      {
        inode: ino,
      },
    );
  }
}
