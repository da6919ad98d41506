/**
 * Block group descriptors (32 bytes, or `s_desc_size` with the 64bit feature): where each
 * group's inode table lives. Descriptors are read lazily, one block at a time, and verified with
 * CRC-32C (`metadata_csum`) or CRC-16 (`gdt_csum`).
 */
import { hiLo, u16, u32 } from '../util/bytes.js';
import { crc16Raw, crc32cRaw, le32 } from '../util/crc.js';
import { fsCorrupt } from '../util/errors.js';
import type { BlockCache } from '../util/volume.js';
import { INCOMPAT, RO_COMPAT, type Superblock } from './superblock.js';

/** The fields of a group descriptor the reader needs. */
export interface GroupDescriptor {
  inodeTable: number;
  flags: number;
}

function isPowerOf(n: number, base: number): boolean {
  let x = n;
  while (x > 1 && x % base === 0) x /= base;
  return x === 1;
}

/** True when block group `g` holds a superblock backup (and so descriptor copies). */
export function groupHasSuper(sb: Superblock, g: number): boolean {
  if (!(sb.roCompat & RO_COMPAT.SPARSE_SUPER)) return true;
  return g <= 1 || isPowerOf(g, 3) || isPowerOf(g, 5) || isPowerOf(g, 7);
}

/** Lazily reads and checks group descriptors through the metadata cache. */
export class GroupDescriptors {
  private readonly perBlock: number;
  constructor(
    private readonly sb: Superblock,
    private readonly cache: BlockCache,
  ) {
    this.perBlock = sb.blockSize / sb.descSize;
  }

  /** Block number holding descriptor block `i` (handles `meta_bg`). */
  private descBlock(i: number): number {
    const sb = this.sb;
    if (sb.incompat & INCOMPAT.META_BG && i >= sb.firstMetaBg) {
      const g = i * this.perBlock;
      return sb.firstDataBlock + g * sb.blocksPerGroup + (groupHasSuper(sb, g) ? 1 : 0);
    }
    return sb.firstDataBlock + 1 + i;
  }

  /** Descriptor of group `g`. */
  async get(g: number): Promise<GroupDescriptor> {
    const sb = this.sb;
    if (!Number.isInteger(g) || g < 0 || g >= sb.groupCount)
      throw fsCorrupt(`block group ${g} does not exist`);
    const blockIdx = Math.floor(g / this.perBlock);
    const block = this.descBlock(blockIdx);
    if (block >= sb.blocksCount) throw fsCorrupt(`group descriptor block ${block} lies past the end`);
    const buf = await this.cache.block(block, 'group descriptor block');
    const off = (g % this.perBlock) * sb.descSize;
    const d = buf.subarray(off, off + sb.descSize);
    this.verify(g, d);
    const wide = sb.descSize >= 64;
    const inodeTable = hiLo(wide ? u32(d, 0x28) : 0, u32(d, 0x8));
    const tableBlocks = Math.ceil((sb.inodesPerGroup * sb.inodeSize) / sb.blockSize);
    if (inodeTable === 0 || inodeTable + tableBlocks > sb.blocksCount) {
      throw fsCorrupt(`inode table of group ${g} (block ${inodeTable}) lies outside the filesystem`, {
        group: g,
      });
    }
    return { inodeTable, flags: u16(d, 0x12) };
  }

  private verify(g: number, d: Buffer): void {
    const sb = this.sb;
    const stored = u16(d, 0x1e);
    let got: number;
    if (sb.metadataCsum) {
      let c = crc32cRaw(sb.csumSeed, le32(g));
      c = crc32cRaw(c, d.subarray(0, 0x1e));
      c = crc32cRaw(c, Buffer.alloc(2));
      if (d.length > 0x20) c = crc32cRaw(c, d.subarray(0x20));
      got = c & 0xffff;
    } else if (sb.gdtCsum) {
      let c = crc16Raw(0xffff, sb.uuidBytes);
      c = crc16Raw(c, le32(g));
      c = crc16Raw(c, d.subarray(0, 0x1e));
      if (d.length > 0x20) c = crc16Raw(c, d.subarray(0x20));
      got = c;
    } else {
      return;
    }
    if (got !== stored) {
      throw fsCorrupt(
        `group descriptor ${g} checksum mismatch (stored ${stored.toString(16)}, computed ${got.toString(16)})`,
        {
          group: g,
        },
      );
    }
  }
}
