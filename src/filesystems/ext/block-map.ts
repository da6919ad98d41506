/**
 * ext2/ext3 block maps: 12 direct pointers in `i_block`, then single, double and triple indirect
 * blocks of 32-bit pointers. A zero pointer is a hole (a whole subtree for indirect pointers).
 */
import { fsCorrupt } from '../util/errors.js';
import type { Inode } from './inode.js';
import type { MapContext, Run } from './runs.js';

const DIRECT = 12;

/**
 * Yields the mapped runs of `inode` from logical block `fromBlock` up to `endBlock` (exclusive),
 * coalescing physically contiguous blocks. Pointers outside the filesystem are corrupt; the
 * number of blocks visited is bounded by the filesystem's block count.
 */
export async function* blockMapRuns(
  ctx: MapContext,
  inode: Inode,
  fromBlock: number,
  endBlock: number,
): AsyncGenerator<Run> {
  const ino = inode.ino;
  const per = ctx.blockSize / 4;
  let budget = ctx.blocksCount * 2 + 16;
  let pending: Run | undefined;

  const check = (p: number) => {
    if (p >= ctx.blocksCount) throw fsCorrupt(`inode ${ino}: block pointer ${p} lies outside the filesystem`);
    if (--budget < 0) throw fsCorrupt(`inode ${ino}: block map visits more blocks than the filesystem has`);
  };
  function* emit(logical: number, physical: number): Generator<Run> {
    if (
      pending &&
      pending.logical + pending.count === logical &&
      pending.physical + pending.count === physical
    ) {
      pending.count++;
      return;
    }
    if (pending) yield pending;
    pending = { logical, physical, count: 1, uninit: false };
  }
  // Walks one pointer of the given level covering logical blocks [base, base + per^level).
  async function* tree(ptr: number, level: number, base: number): AsyncGenerator<Run> {
    if (ptr === 0) return;
    check(ptr);
    if (level === 0) {
      yield* emit(base, ptr);
      return;
    }
    const span = per ** (level - 1);
    const buf = await ctx.metaBlock(ptr, `indirect block of inode ${ino}`);
    const first = Math.max(0, Math.floor((fromBlock - base) / span));
    for (let i = first; i < per; i++) {
      const childBase = base + i * span;
      if (childBase >= endBlock) break;
      yield* tree(buf.readUInt32LE(i * 4), level - 1, childBase);
    }
  }

  const ib = inode.iblock;
  for (let i = Math.min(fromBlock, DIRECT); i < DIRECT && i < endBlock; i++)
    yield* tree(ib.readUInt32LE(i * 4), 0, i);
  let base = DIRECT;
  for (let level = 1; level <= 3; level++) {
    const span = per ** level;
    if (base >= endBlock) break;
    if (base + span > fromBlock) yield* tree(ib.readUInt32LE((DIRECT + level - 1) * 4), level, base);
    base += span;
  }
  if (pending) yield pending;
}
