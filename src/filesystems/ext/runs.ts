/** The common shape of a file's block mapping, whatever the on-disk scheme. */

/** A run of logical blocks mapped to consecutive physical blocks. */
export interface Run {
  /** First logical block of the file. */
  logical: number;
  /** First physical block on the volume. */
  physical: number;
  /** Number of blocks. */
  count: number;
  /** Allocated but unwritten (reads as zeros). */
  uninit: boolean;
}

/** What the mapping readers need from the filesystem. */
export interface MapContext {
  blockSize: number;
  blocksCount: number;
  metadataCsum: boolean;
  /** Reads a metadata block through the cache. */
  metaBlock(n: number, what: string): Promise<Buffer>;
}
