/**
 * The interface an NBD export implements to be served by {@link NbdServer}. Keep it small: only
 * `size`, `readOnly` and `read` are required; every optional method enables one more feature.
 *
 * Offsets and lengths handed to an export are already validated by the server: they lie within
 * `[0, size)`, lengths are non-zero and at most the export's maximum block size (32 MiB by
 * default) for read and write. Methods may run concurrently. To fail a request with a particular
 * NBD error, throw an error whose `code` (Node style) or `details.errno` (VmvaultError) is an errno
 * name such as `EIO`, `ENOSPC` or `EINVAL`; anything else is reported as EIO.
 */
import type { Extent } from '../../core/block-reader.js';

/** Block size constraints advertised with NBD_INFO_BLOCK_SIZE. */
export interface NbdExportBlockSize {
  /** Power of 2, 1..65536. Default 1. */
  minimum: number;
  /** Power of 2, ≥ max(minimum, 512). Default 4096. */
  preferred: number;
  /** Largest READ/WRITE accepted; a multiple of `minimum`, at most 32 MiB. Default 32 MiB. */
  maximum: number;
}

/** One piece of a sparse read: bytes, or a run of zeros when `data` is absent. */
export interface ReadSegment {
  offset: number;
  length: number;
  /** The bytes (exactly `length`), or undefined for a range that reads as zeros. */
  data?: Buffer;
}

/**
 * The answer of {@link NbdExport.readSparseHeld}: segments whose `data` buffers the export lends
 * until `release()` is called.
 */
export interface HeldSegments {
  segments: ReadSegment[];
  /** Called exactly once, when the server no longer needs the buffers (sent, or failed). */
  release(): void;
}

/**
 * A `base:allocation` extent. `data: false` means the range reads as zeros (NBD_STATE_ZERO);
 * it is also reported as a hole (NBD_STATE_HOLE) unless `hole` is explicitly false. A core
 * {@link Extent} is a valid AllocationExtent.
 */
export interface AllocationExtent extends Extent {
  hole?: boolean;
}

/** A disk image the server can export. */
export interface NbdExport {
  /** Size in bytes. */
  readonly size: number;
  /** When true the server advertises NBD_FLAG_READ_ONLY and refuses writes with EPERM. */
  readonly readOnly: boolean;
  /**
   * Whether several connections may use the export at once with consistent results
   * (NBD_FLAG_CAN_MULTI_CONN). Default: true when read-only, false otherwise.
   */
  readonly multiConn?: boolean;
  /** Human-readable description for NBD_OPT_LIST / NBD_INFO_DESCRIPTION. */
  readonly description?: string;
  /** Block size constraints; defaults 1 / 4096 / 32 MiB. */
  readonly blockSize?: NbdExportBlockSize;

  /** Reads exactly `length` bytes at `offset`. */
  read(offset: number, length: number): Promise<Buffer>;
  /**
   * Optional sparse read: contiguous segments covering exactly `[offset, offset+length)` in
   * order. Zero segments are sent as NBD_REPLY_TYPE_OFFSET_HOLE chunks.
   */
  readSparse?(offset: number, length: number): Promise<ReadSegment[]>;
  /**
   * Optional {@link readSparse} without copies: the data buffers may be the export's own memory
   * (e.g. a cache), which it must not reuse before `release()`. The server prefers it, and
   * releases once the reply has been handed to the kernel or the connection is gone.
   */
  readSparseHeld?(offset: number, length: number): Promise<HeldSegments>;
  /**
   * Optional allocation status for `base:allocation`: contiguous extents starting at `offset`.
   * They may stop short of `offset + length` (the client asks again) or overrun it (clamped).
   * Without it every range is reported as allocated data (status 0).
   */
  blockStatus?(offset: number, length: number): Promise<AllocationExtent[]>;

  /** Writes `data` at `offset`. Required for a writable export. */
  write?(offset: number, data: Buffer): Promise<void>;
  /** Makes all completed writes durable. Enables NBD_FLAG_SEND_FLUSH and SEND_FUA. */
  flush?(): Promise<void>;
  /** Discards a range (contents become undefined). Enables NBD_FLAG_SEND_TRIM. */
  trim?(offset: number, length: number): Promise<void>;
  /**
   * Zeroes a range; `noHole` asks to keep it allocated. Without it the server writes zero
   * buffers through `write`.
   */
  writeZeroes?(offset: number, length: number, opts: { noHole: boolean }): Promise<void>;
  /** Prefetch hint (NBD_CMD_CACHE). Without it CACHE succeeds and does nothing. */
  cache?(offset: number, length: number): Promise<void>;
}
