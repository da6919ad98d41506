/**
 * ext4 extent trees: a 12-byte header, then 12-byte index entries (interior nodes) or extents
 * (leaves). The root lives in the inode's `i_block`; deeper nodes occupy whole blocks, each with a
 * CRC-32C tail under `metadata_csum`.
 */
import { hiLo, u16, u32 } from '../util/bytes.js';
import { crc32cRaw } from '../util/crc.js';
import { fsCorrupt } from '../util/errors.js';
import type { Inode } from './inode.js';
import type { MapContext, Run } from './runs.js';

/** `eh_magic`. */
export const EXTENT_MAGIC = 0xf30a;
/** Deepest tree accepted (the kernel never builds more than 5 levels). */
export const MAX_EXTENT_DEPTH = 5;
const INIT_MAX_LEN = 32768;

interface Header {
  entries: number;
  max: number;
  depth: number;
}

function header(buf: Buffer, ino: number, where: string): Header {
  if (buf.length < 12 || u16(buf, 0) !== EXTENT_MAGIC)
    throw fsCorrupt(`inode ${ino}: bad extent header in ${where}`);
  const h = { entries: u16(buf, 2), max: u16(buf, 4), depth: u16(buf, 6) };
  if (h.max === 0 || 12 + h.max * 12 > buf.length || h.entries > h.max) {
    throw fsCorrupt(`inode ${ino}: extent node in ${where} claims ${h.entries}/${h.max} entries`);
  }
  if (h.depth > MAX_EXTENT_DEPTH)
    throw fsCorrupt(`inode ${ino}: extent tree depth ${h.depth} exceeds ${MAX_EXTENT_DEPTH}`);
  return h;
}

/**
 * Yields the extents of `inode` that end after logical block `fromBlock`, in logical order.
 * Rejects trees that are too deep, out of order, overlapping, or point outside the filesystem.
 */
export async function* extentRuns(ctx: MapContext, inode: Inode, fromBlock = 0): AsyncGenerator<Run> {
  const ino = inode.ino;
  let nextLogical = 0;
  let nodes = 0;
  async function* visit(buf: Buffer, expectDepth: number | undefined, where: string): AsyncGenerator<Run> {
    const h = header(buf, ino, where);
    if (expectDepth !== undefined) {
      if (h.depth !== expectDepth)
        throw fsCorrupt(`inode ${ino}: extent node ${where} has depth ${h.depth}, expected ${expectDepth}`);
      if (h.entries === 0) throw fsCorrupt(`inode ${ino}: empty extent node ${where}`);
    }
    if (++nodes > ctx.blocksCount) throw fsCorrupt(`inode ${ino}: extent tree visits too many nodes`);
    if (h.depth === 0) {
      for (let i = 0; i < h.entries; i++) {
        const o = 12 + i * 12;
        const logical = u32(buf, o);
        const rawLen = u16(buf, o + 4);
        const uninit = rawLen > INIT_MAX_LEN;
        const count = uninit ? rawLen - INIT_MAX_LEN : rawLen;
        const physical = hiLo(u16(buf, o + 6), u32(buf, o + 8));
        if (count === 0) throw fsCorrupt(`inode ${ino}: zero-length extent`);
        if (logical < nextLogical)
          throw fsCorrupt(`inode ${ino}: extents overlap or are out of order at block ${logical}`);
        if (physical === 0 || physical + count > ctx.blocksCount) {
          throw fsCorrupt(`inode ${ino}: extent points outside the filesystem (block ${physical}+${count})`);
        }
        nextLogical = logical + count;
        if (logical + count > fromBlock) yield { logical, physical, count, uninit };
      }
      return;
    }
    for (let i = 0; i < h.entries; i++) {
      const o = 12 + i * 12;
      const start = u32(buf, o);
      const nextStart = i + 1 < h.entries ? u32(buf, o + 12) : Number.POSITIVE_INFINITY;
      if (nextStart <= start) throw fsCorrupt(`inode ${ino}: extent index out of order`);
      if (nextStart <= fromBlock) continue;
      const child = hiLo(u16(buf, o + 8), u32(buf, o + 4));
      if (child === 0 || child >= ctx.blocksCount)
        throw fsCorrupt(`inode ${ino}: extent index points to block ${child}`);
      const cbuf = await ctx.metaBlock(child, `extent block of inode ${ino}`);
      if (ctx.metadataCsum) verifyTail(cbuf, inode, child);
      yield* visit(cbuf, h.depth - 1, `block ${child}`);
    }
  }
  yield* visit(inode.iblock, undefined, 'inode');
}

function verifyTail(buf: Buffer, inode: Inode, block: number): void {
  const max = u16(buf, 4);
  const tail = 12 + max * 12;
  if (tail + 4 > buf.length) return;
  const stored = u32(buf, tail);
  const got = crc32cRaw(inode.csumSeed, buf.subarray(0, tail));
  if (stored !== got) throw fsCorrupt(`inode ${inode.ino}: extent block ${block} checksum mismatch`);
}
