/**
 * The ext2/3/4 superblock (1024 bytes at byte 1024 of the volume): geometry, feature flags and,
 * with `metadata_csum`, its CRC-32C.
 */
import { cString, hiLo, u8, u16, u32, uuidString } from '../util/bytes.js';
import { crc32cRaw } from '../util/crc.js';
import { fsCorrupt, fsUnsupported } from '../util/errors.js';

/** Byte offset of the primary superblock. */
export const SUPERBLOCK_OFFSET = 1024;
/** Size of the superblock structure. */
export const SUPERBLOCK_SIZE = 1024;
/** `s_magic`. */
export const EXT_MAGIC = 0xef53;

/** Compatible feature bits (`s_feature_compat`). */
export const COMPAT = { HAS_JOURNAL: 0x4, EXT_ATTR: 0x8, RESIZE_INODE: 0x10, DIR_INDEX: 0x20 } as const;
/** Incompatible feature bits (`s_feature_incompat`). */
export const INCOMPAT = {
  COMPRESSION: 0x1,
  FILETYPE: 0x2,
  RECOVER: 0x4,
  JOURNAL_DEV: 0x8,
  META_BG: 0x10,
  EXTENTS: 0x40,
  BIT64: 0x80,
  MMP: 0x100,
  FLEX_BG: 0x200,
  EA_INODE: 0x400,
  DIRDATA: 0x1000,
  CSUM_SEED: 0x2000,
  LARGEDIR: 0x4000,
  INLINE_DATA: 0x8000,
  ENCRYPT: 0x10000,
  CASEFOLD: 0x20000,
} as const;
/** Read-only-compatible feature bits (`s_feature_ro_compat`). */
export const RO_COMPAT = {
  SPARSE_SUPER: 0x1,
  LARGE_FILE: 0x2,
  HUGE_FILE: 0x8,
  GDT_CSUM: 0x10,
  DIR_NLINK: 0x20,
  EXTRA_ISIZE: 0x40,
  BIGALLOC: 0x200,
  METADATA_CSUM: 0x400,
} as const;

/** Incompatible features this reader understands; anything else is refused. */
const KNOWN_INCOMPAT =
  INCOMPAT.FILETYPE |
  INCOMPAT.RECOVER |
  INCOMPAT.META_BG |
  INCOMPAT.EXTENTS |
  INCOMPAT.BIT64 |
  INCOMPAT.MMP |
  INCOMPAT.FLEX_BG |
  INCOMPAT.EA_INODE |
  INCOMPAT.CSUM_SEED |
  INCOMPAT.LARGEDIR |
  INCOMPAT.INLINE_DATA |
  INCOMPAT.CASEFOLD;

/** Parsed superblock fields the reader uses. */
export interface Superblock {
  inodesCount: number;
  blocksCount: number;
  firstDataBlock: number;
  blockSize: number;
  blocksPerGroup: number;
  inodesPerGroup: number;
  revLevel: number;
  firstIno: number;
  inodeSize: number;
  compat: number;
  incompat: number;
  roCompat: number;
  uuid: string;
  uuidBytes: Buffer;
  label: string | undefined;
  descSize: number;
  firstMetaBg: number;
  /** Seed of every metadata checksum: crc32c(~0, uuid) or `s_checksum_seed`. */
  csumSeed: number;
  groupCount: number;
  metadataCsum: boolean;
  gdtCsum: boolean;
}

/** Which of ext2, ext3 or ext4 the feature flags make this (as blkid names it). */
export function extFlavour(
  sb: Pick<Superblock, 'compat' | 'incompat' | 'roCompat'>,
): 'ext2' | 'ext3' | 'ext4' {
  const ext4Incompat =
    INCOMPAT.EXTENTS | INCOMPAT.BIT64 | INCOMPAT.FLEX_BG | INCOMPAT.INLINE_DATA | INCOMPAT.META_BG;
  const ext4Ro =
    RO_COMPAT.HUGE_FILE |
    RO_COMPAT.GDT_CSUM |
    RO_COMPAT.DIR_NLINK |
    RO_COMPAT.EXTRA_ISIZE |
    RO_COMPAT.METADATA_CSUM;
  if (sb.incompat & ext4Incompat || sb.roCompat & ext4Ro) return 'ext4';
  return sb.compat & COMPAT.HAS_JOURNAL ? 'ext3' : 'ext2';
}

/** True when the 1024-byte buffer carries the ext magic. */
export function hasExtMagic(raw: Buffer): boolean {
  return raw.length >= 0x3a && raw.readUInt16LE(0x38) === EXT_MAGIC;
}

/**
 * Parses and sanity-checks a superblock. `volumeSize` bounds the block count. Throws
 * `E_FS_CORRUPT` on nonsense geometry or checksum mismatch and `E_FS_UNSUPPORTED` on unknown
 * incompatible features.
 */
export function parseSuperblock(raw: Buffer, volumeSize: number): Superblock {
  if (!hasExtMagic(raw)) throw fsCorrupt('no ext2/3/4 superblock magic');
  const incompat = u32(raw, 0x60);
  const roCompat = u32(raw, 0x64);
  const metadataCsum = (roCompat & RO_COMPAT.METADATA_CSUM) !== 0;
  if (metadataCsum) {
    const want = u32(raw, 0x3fc);
    const got = crc32cRaw(0xffffffff, raw.subarray(0, 0x3fc));
    if (want !== got) {
      throw fsCorrupt(
        `ext superblock checksum mismatch (stored ${want.toString(16)}, computed ${got.toString(16)})`,
      );
    }
  }
  const logBlock = u32(raw, 0x18);
  if (logBlock > 6) throw fsCorrupt(`ext block size 2^(10+${logBlock}) is out of range`);
  const blockSize = 1024 << logBlock;
  const bit64 = (incompat & INCOMPAT.BIT64) !== 0;
  const blocksCount = hiLo(bit64 ? u32(raw, 0x150) : 0, u32(raw, 0x4));
  const revLevel = u32(raw, 0x4c);
  const inodeSize = revLevel === 0 ? 128 : u16(raw, 0x58);
  const firstIno = revLevel === 0 ? 11 : u32(raw, 0x54);
  const descSize = bit64 ? u16(raw, 0xfe) : 32;
  const sb: Superblock = {
    inodesCount: u32(raw, 0),
    blocksCount,
    firstDataBlock: u32(raw, 0x14),
    blockSize,
    blocksPerGroup: u32(raw, 0x20),
    inodesPerGroup: u32(raw, 0x28),
    revLevel,
    firstIno,
    inodeSize,
    compat: u32(raw, 0x5c),
    incompat,
    roCompat,
    uuidBytes: Buffer.from(raw.subarray(0x68, 0x78)),
    uuid: uuidString(raw.subarray(0x68, 0x78)),
    label: cString(raw.subarray(0x78, 0x88)) || undefined,
    descSize,
    firstMetaBg: u32(raw, 0x104),
    csumSeed: 0,
    groupCount: 0,
    metadataCsum,
    gdtCsum: (roCompat & RO_COMPAT.GDT_CSUM) !== 0,
  };
  sb.csumSeed = incompat & INCOMPAT.CSUM_SEED ? u32(raw, 0x270) : crc32cRaw(0xffffffff, sb.uuidBytes);
  if (blocksCount === 0 || blocksCount * blockSize > volumeSize + blockSize) {
    throw fsCorrupt(`ext block count ${blocksCount} does not fit the ${volumeSize}-byte volume`);
  }
  if (sb.blocksPerGroup === 0 || sb.blocksPerGroup > blockSize * 8) {
    throw fsCorrupt(`ext blocks per group ${sb.blocksPerGroup} is out of range`);
  }
  if (sb.inodesPerGroup === 0 || sb.inodesPerGroup > blockSize * 8) {
    throw fsCorrupt(`ext inodes per group ${sb.inodesPerGroup} is out of range`);
  }
  if (inodeSize < 128 || inodeSize > blockSize || (inodeSize & (inodeSize - 1)) !== 0) {
    throw fsCorrupt(`ext inode size ${inodeSize} is invalid`);
  }
  if (bit64 && (descSize < 32 || descSize > 1024 || (descSize & (descSize - 1)) !== 0)) {
    throw fsCorrupt(`ext group descriptor size ${descSize} is invalid`);
  }
  if (sb.firstDataBlock >= blocksCount) throw fsCorrupt('ext first data block lies past the end');
  sb.groupCount = Math.ceil((blocksCount - sb.firstDataBlock) / sb.blocksPerGroup);
  if (sb.inodesCount > sb.groupCount * sb.inodesPerGroup)
    throw fsCorrupt('ext inode count exceeds the groups');
  const unknown = incompat & ~KNOWN_INCOMPAT;
  if (unknown) throw fsUnsupported(`ext incompatible features 0x${unknown.toString(16)} are not supported`);
  if (incompat & INCOMPAT.ENCRYPT) throw fsUnsupported('encrypted ext4 is not supported');
  if (u8(raw, 0x175) !== 1 && metadataCsum) throw fsUnsupported('unknown ext metadata checksum type');
  return sb;
}
