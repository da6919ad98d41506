/** The interface every backup source implements: a disk to read, with its data extents. */
import type { Extent } from '../core/index.js';

/**
 * An extent as a source reports it. `unchanged: true` (with `data: true`) marks a range the
 * source knows has not changed since the parent restore point (a clean range of a dirty
 * bitmap): the backup copies its chunk digests from the parent instead of reading it.
 */
export interface SourceExtent extends Extent {
  unchanged?: boolean;
}

/** A disk that a backup reads. */
export interface DiskSource {
  /** What kind of source ("file", "device", "nbd", "qemu-image"). */
  readonly kind: string;
  /** Path or URI, for the restore point's record. */
  readonly path: string;
  /** Image format when known ("raw", "qcow2"). */
  readonly format: string;
  /** Size in bytes. */
  readonly size: number;
  /**
   * Extents covering [0, size) in order. Ranges with `data: false` are known to read as zeros
   * and are not read. A source that cannot tell reports one data extent. Only a backup given a
   * parent disk may receive `unchanged` extents; without one they are read like data.
   */
  extents(): AsyncIterable<SourceExtent>;
  /** Reads into `buf` from `offset`, exactly `buf.length` bytes (the range is inside the disk). */
  readInto(buf: Buffer, offset: number): Promise<void>;
  close(): Promise<void>;
}
