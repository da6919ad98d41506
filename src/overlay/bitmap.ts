/**
 * The two chunk bitmaps of an overlay, held in memory as one buffer laid out exactly as on disk
 * (the "in the overlay" bitmap, then the "reads as zeros" bitmap), with the 4 KiB pages changed
 * since the last write-back remembered so a flush writes only those.
 */
import { BITMAP_PAGE } from './format.js';

/** Where a chunk's current content is. */
export type ChunkState = 'base' | 'data' | 'zero';

/** A changed bitmap page copied out for writing back. */
export interface BitmapPage {
  /** Page number within the bitmap region (both bitmaps, back to back). */
  page: number;
  bytes: Buffer;
}

/** In-memory chunk bitmaps of an overlay. */
export class ChunkBitmaps {
  /** Both bitmaps, back to back, as on disk. */
  readonly region: Buffer;
  private readonly inOverlay: Buffer;
  private readonly zero: Buffer;
  private readonly dirty = new Set<number>();

  /** `region` holds both bitmaps of `bitmapBytes` each (taken over, not copied). */
  constructor(
    region: Buffer,
    readonly bitmapBytes: number,
    readonly chunkCount: number,
  ) {
    this.region = region;
    this.inOverlay = region.subarray(0, bitmapBytes);
    this.zero = region.subarray(bitmapBytes, 2 * bitmapBytes);
  }

  /** Where chunk `i`'s content is: the base disk, the overlay's data area, or nowhere (zeros). */
  state(i: number): ChunkState {
    const bit = 1 << (i & 7);
    if ((this.inOverlay[i >> 3]! & bit) === 0) return 'base';
    return (this.zero[i >> 3]! & bit) === 0 ? 'data' : 'zero';
  }

  /** Chunk `i` now lives in the data area. Call only once its bytes are written there. */
  setData(i: number): void {
    this.set(this.inOverlay, 0, i, true);
    this.set(this.zero, this.bitmapBytes, i, false);
  }

  /** Chunk `i` now reads as zeros (its data slot, if any, is stale). */
  setZero(i: number): void {
    this.set(this.inOverlay, 0, i, true);
    this.set(this.zero, this.bitmapBytes, i, true);
  }

  private set(map: Buffer, base: number, i: number, on: boolean): void {
    const byte = i >> 3;
    const bit = 1 << (i & 7);
    const old = map[byte]!;
    const next = on ? old | bit : old & ~bit;
    if (next === old) return;
    map[byte] = next;
    this.dirty.add(Math.floor((base + byte) / BITMAP_PAGE));
  }

  /** True when some page changed since the last {@link takeDirty}. */
  get hasDirty(): boolean {
    return this.dirty.size > 0;
  }

  /**
   * Copies out every changed page, as it is now, and forgets that they changed. Bits set after
   * this call belong to the next write-back.
   */
  takeDirty(): BitmapPage[] {
    const pages = [...this.dirty].sort((a, b) => a - b);
    this.dirty.clear();
    return pages.map((page) => ({
      page,
      bytes: Buffer.from(this.region.subarray(page * BITMAP_PAGE, (page + 1) * BITMAP_PAGE)),
    }));
  }

  /** Marks pages changed again (their write-back failed). */
  redirty(pages: readonly BitmapPage[]): void {
    for (const p of pages) this.dirty.add(p.page);
  }

  /** Chunk numbers whose content is in the overlay (data or zeros), ascending. */
  chunks(): number[] {
    const out: number[] = [];
    for (let byte = 0; byte < this.inOverlay.length; byte++) {
      const v = this.inOverlay[byte]!;
      if (v === 0) continue;
      for (let b = 0; b < 8; b++) if (v & (1 << b)) out.push(byte * 8 + b);
    }
    return out;
  }

  /** How many chunks are in the data area and how many read as zeros. */
  counts(): { data: number; zero: number } {
    let data = 0;
    let zero = 0;
    for (let byte = 0; byte < this.inOverlay.length; byte++) {
      const v = this.inOverlay[byte]!;
      if (v === 0) continue;
      const z = this.zero[byte]! & v;
      zero += popcount(z);
      data += popcount(v & ~z);
    }
    return { data, zero };
  }

  /** True when a bit is set past the last chunk (a damaged bitmap). */
  hasBitsPastEnd(): boolean {
    for (const map of [this.inOverlay, this.zero]) {
      for (let i = this.chunkCount; i < map.length * 8; i++) {
        if ((i & 7) === 0 && map[i >> 3] === 0) {
          i += 7;
          continue;
        }
        if (map[i >> 3]! & (1 << (i & 7))) return true;
      }
    }
    return false;
  }
}

function popcount(v: number): number {
  let n = 0;
  for (let x = v & 0xff; x; x &= x - 1) n++;
  return n;
}
