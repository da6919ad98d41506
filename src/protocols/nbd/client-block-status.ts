/**
 * Block status helpers of the client: looping raw BLOCK_STATUS replies into extents that cover a
 * range exactly, and turning them into core {@link Extent}s.
 */
import type { Extent } from '../../core/block-reader.js';
import type { NbdExtent } from './client-types.js';
import { protocolError } from './errors.js';

/** One raw BLOCK_STATUS request: per context name, extents contiguous from `offset`. */
export type BlockStatusQuery = (offset: number, length: number) => Promise<Map<string, NbdExtent[]>>;

/**
 * Asks `query` until every context in `names` covers `[offset, offset + length)`: overruns are
 * clamped, adjacent extents with equal flags merged.
 */
export async function collectBlockStatus(
  query: BlockStatusQuery,
  offset: number,
  length: number,
  names: string[],
): Promise<Map<string, NbdExtent[]>> {
  const end = offset + length;
  const result = new Map<string, NbdExtent[]>(names.map((n) => [n, []]));
  const cursor = new Map<string, number>(names.map((n) => [n, offset]));
  for (;;) {
    let pos = end;
    for (const c of cursor.values()) pos = Math.min(pos, c);
    if (pos >= end) break;
    const reply = await query(pos, Math.min(end - pos, 0x40000000));
    for (const name of names) {
      const exts = reply.get(name);
      if (!exts) throw protocolError(`block status reply lacks context '${name}'`);
      let at = cursor.get(name)!;
      const list = result.get(name)!;
      for (const e of exts) {
        const s = Math.max(e.offset, at);
        const t = Math.min(e.offset + e.length, end);
        if (t <= s) continue;
        const last = list[list.length - 1];
        if (last && last.flags === e.flags && last.offset + last.length === s) last.length += t - s;
        else list.push({ offset: s, length: t - s, flags: e.flags });
        at = t;
      }
      cursor.set(name, at);
    }
  }
  return result;
}

/** Converts status extents to core extents (`isData` decides from the flags), merging neighbours. */
export function toExtents(list: NbdExtent[], isData: (flags: number) => boolean): Extent[] {
  const out: Extent[] = [];
  for (const e of list) {
    const data = isData(e.flags);
    const last = out[out.length - 1];
    if (last && last.data === data) last.length += e.length;
    else out.push({ offset: e.offset, length: e.length, data });
  }
  return out;
}
