/**
 * The small interfaces through which subsystems read disks without knowing where the bytes live
 * (a raw file, an NBD export, a restore point in the repository).
 */

/** A read-only random-access view of a disk or a region of one. */
export interface BlockReader {
  /** Size in bytes. */
  readonly size: number;
  /**
   * Reads `length` bytes at `offset`. Reads past the end are an error; the returned buffer has
   * exactly `length` bytes. It may be a view of a reader's cache: callers must not modify it.
   */
  read(offset: number, length: number): Promise<Buffer>;
}

/** One extent of a disk: a byte range and whether it holds data. */
export interface Extent {
  offset: number;
  length: number;
  /** `false` for holes and ranges known to read as zeros. */
  data: boolean;
}
