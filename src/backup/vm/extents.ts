/**
 * Turns what the fleecing export reports (allocation, dirty bitmap) into the extents the
 * backup pipeline reads. Everything is aligned to chunks so that no chunk mixes "read" with
 * "copy from the parent": a chunk with any dirty byte is read whole (or recorded as zero when it
 * reads as zeros throughout), every other chunk is copied from the parent point.
 */
import type { Extent } from '../../core/index.js';
import type { SourceExtent } from '../../sources/index.js';

/** `[start, end)` byte ranges of whole chunks touched by the dirty extents, merged, in order. */
export function dirtyChunkRanges(
  dirty: readonly Extent[],
  chunkSize: number,
  size: number,
): [number, number][] {
  const out: [number, number][] = [];
  for (const e of dirty) {
    if (!e.data || e.length <= 0) continue;
    const a = Math.floor(e.offset / chunkSize) * chunkSize;
    const b = Math.min(size, Math.ceil((e.offset + e.length) / chunkSize) * chunkSize);
    const last = out[out.length - 1];
    if (last && a <= last[1]) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

/**
 * Extents for the pipeline. Without `dirty` (full or read-compare): the allocation map as it is.
 * With `dirty`: clean chunk ranges as `unchanged`, dirty chunk ranges as data except whole
 * chunks that read as zeros.
 */
export function composeExtents(
  size: number,
  chunkSize: number,
  allocation: readonly Extent[],
  dirty?: readonly Extent[],
): SourceExtent[] {
  if (!dirty) return allocation.map((e) => ({ offset: e.offset, length: e.length, data: e.data }));
  const out: SourceExtent[] = [];
  const push = (offset: number, end: number, data: boolean, unchanged = false): void => {
    if (end <= offset) return;
    const last = out[out.length - 1];
    if (
      last &&
      last.data === data &&
      (last.unchanged ?? false) === unchanged &&
      last.offset + last.length === offset
    ) {
      last.length += end - offset;
      return;
    }
    out.push(
      unchanged ? { offset, length: end - offset, data, unchanged } : { offset, length: end - offset, data },
    );
  };
  let at = 0;
  let ai = 0;
  for (const [a, b] of dirtyChunkRanges(dirty, chunkSize, size)) {
    push(at, a, true, true);
    // Allocation inside [a, b): zero runs shrunk to whole chunks, the rest is data.
    while (ai < allocation.length && allocation[ai]!.offset + allocation[ai]!.length <= a) ai++;
    let pos = a;
    for (let i = ai; i < allocation.length && allocation[i]!.offset < b; i++) {
      const e = allocation[i]!;
      const s = Math.max(e.offset, a);
      const t = Math.min(e.offset + e.length, b);
      if (t <= s) continue;
      if (e.data) continue;
      const zs = Math.ceil(s / chunkSize) * chunkSize;
      const zt = t === size ? t : Math.floor(t / chunkSize) * chunkSize;
      if (zt <= zs) continue;
      push(pos, zs, true);
      push(zs, zt, false);
      pos = zt;
    }
    push(pos, b, true);
    at = b;
  }
  push(at, size, true, true);
  return out;
}
