/**
 * Loader for vmvault's small native addon (native/seek.c): lseek with SEEK_DATA/SEEK_HOLE and
 * the size of block devices, which Node.js does not expose, LZ4 frames (liblz4), and AES-256-GCM
 * with a kept cipher context (Node's own OpenSSL). Everything but LZ4 has a slower fallback, so
 * a missing build only costs speed; repositories created with lz4 compression need it.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** The addon's functions. */
export interface NativeAddon {
  /** lseek(2); whence 3 = SEEK_DATA, 4 = SEEK_HOLE. Returns -1 for ENXIO. */
  lseek(fd: number, offset: number, whence: number): number;
  /** Size of a block device in bytes (BLKGETSIZE64). */
  blkGetSize64(fd: number): number;
  /**
   * Bytes to skip from the start of `bytes` for an address that is a multiple of `alignment`
   * (a power of two). Absent from older builds.
   */
  alignOffset?(bytes: Uint8Array, alignment: number): number;
  /** Worst-case size of the LZ4 frame of `n` content bytes. */
  lz4Bound(n: number): number;
  /**
   * Writes one LZ4 frame of `src` (content size and, unless `checksum` is false, the XXH32
   * content checksum in the frame) into `dst` from `at`; returns its length. `dst` must hold `lz4Bound(src.length)` bytes from `at`.
   */
  lz4CompressInto(src: Uint8Array, dst: Uint8Array, at: number, level: number, checksum?: boolean): number;
  /**
   * Decodes exactly one LZ4 frame into `dst`; returns the content length. Throws (code
   * `E_LZ4`) when the frame is damaged or truncated, its checksum fails, bytes follow it, or
   * its content does not fit `dst`.
   */
  lz4DecompressInto(frame: Uint8Array, dst: Uint8Array): number;
  /**
   * XXH64 of `data` with seed 0 (zstd's content checksum is its low 32 bits, little-endian).
   * Absent from addons built before it existed: check before use.
   */
  xxh64?(data: Uint8Array): bigint;
  /**
   * Order-0 entropy in bits per byte of `windows` windows of `window` bytes spread evenly over
   * `data` (the first at its start, the last at its end). Absent from older builds.
   */
  sampledEntropy?(data: Uint8Array, windows: number, window: number): number;
  /**
   * AES-256-GCM: encrypts the concatenation of `parts` under `key` (32 bytes) and `nonce`
   * (12 bytes) into `dst` from `at`: ciphertext, then the 16-byte tag. Returns the bytes
   * written. Throws (code `E_GCM`) when they do not fit. Same output as Node's cipher.
   */
  gcmSealInto(
    key: Uint8Array,
    nonce: Uint8Array,
    parts: readonly Uint8Array[],
    dst: Uint8Array,
    at: number,
  ): number;
  /**
   * Decrypts `body` into `dst` (at least as long) and checks `tag` (16 bytes). Returns false
   * when the tag does not authenticate; `dst` then holds scratch bytes, not plaintext.
   */
  gcmOpenInto(
    key: Uint8Array,
    nonce: Uint8Array,
    body: Uint8Array,
    tag: Uint8Array,
    dst: Uint8Array,
  ): boolean;
  /**
   * memmove of `src` into `dst` from `at`; returns `src.length`. Throws a RangeError when it
   * does not fit. Absent from older builds: use {@link copyBytes}.
   */
  copyInto?(dst: Uint8Array, at: number, src: Uint8Array): number;
}

/**
 * Copies `src` into `dst` at `at`, like `dst.set(src, at)` but with memmove when the native
 * addon has it: V8 copies to or from SharedArrayBuffer memory with relaxed atomics, ~4× slower
 * here (3.4 against 15 GB/s), and codec workers copy chunks out of shared segments.
 */
export function copyBytes(dst: Uint8Array, at: number, src: Uint8Array): void {
  const n = nativeAddon();
  if (n?.copyInto) n.copyInto(dst, at, src);
  else dst.set(src, at);
}

export const SEEK_END = 2;
export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;

let cached: NativeAddon | null | undefined;

/** The native addon, or null when it was not built. */
export function nativeAddon(): NativeAddon | null {
  if (cached !== undefined) return cached;
  cached = null;
  // dist/src/core/native.js → <root>/native/build/Release
  for (const rel of [
    '../../../native/build/Release/vmvault_native.node',
    '../../native/build/Release/vmvault_native.node',
  ]) {
    const path = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(path)) {
      cached = createRequire(import.meta.url)(path) as NativeAddon;
      break;
    }
  }
  return cached;
}
