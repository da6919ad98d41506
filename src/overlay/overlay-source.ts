/**
 * An overlay and the restore point under it seen as a backup source, so that saving an overlay
 * runs the ordinary backup pipeline: chunks in the overlay's data area are data extents (read
 * and stored), chunks it zeroed are zero extents, and every other chunk is `unchanged` (its
 * digest is copied from the parent point's tree without reading it).
 */
import type { DiskSource, SourceExtent } from '../sources/index.js';
import type { ChunkState } from './bitmap.js';
import { type OverlayBase, OverlayExport } from './overlay-export.js';
import type { Overlay } from './overlay.js';

/** A {@link DiskSource} over an overlay and its base. */
export class OverlaySource implements DiskSource {
  readonly kind = 'overlay';
  readonly format = 'raw';
  readonly path: string;
  readonly size: number;
  private readonly merged: OverlayExport;

  constructor(
    private readonly overlay: Overlay,
    base: OverlayBase,
  ) {
    this.path = overlay.path;
    this.size = overlay.size;
    this.merged = new OverlayExport(base, overlay, overlay.path);
  }

  async *extents(): AsyncIterable<SourceExtent> {
    const cs = this.overlay.chunkSize;
    let runState: ChunkState | null = null;
    let runFirst = 0;
    const extent = (state: ChunkState, first: number, end: number): SourceExtent => {
      const offset = first * cs;
      const length = Math.min(this.size, end * cs) - offset;
      if (state === 'base') return { offset, length, data: true, unchanged: true };
      return { offset, length, data: state === 'data' };
    };
    for (let i = 0; i < this.overlay.chunkCount; i++) {
      const s = this.overlay.state(i);
      if (s === runState) continue;
      if (runState !== null) yield extent(runState, runFirst, i);
      runState = s;
      runFirst = i;
    }
    if (runState !== null) yield extent(runState, runFirst, this.overlay.chunkCount);
  }

  async readInto(buf: Buffer, offset: number): Promise<void> {
    for (const s of await this.merged.readSparse(offset, buf.length)) {
      const at = s.offset - offset;
      if (s.data) s.data.copy(buf, at);
      else buf.fill(0, at, at + s.length);
    }
  }

  /** The overlay and its base stay open: their owner closes them. */
  async close(): Promise<void> {}
}
