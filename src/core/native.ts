/**
 * Loader for vmvault's small native addon (native/seek.c): lseek with SEEK_DATA/SEEK_HOLE and
 * the size of block devices, which Node.js does not expose. Everything that uses it has a slower
 * fallback, so a missing build only costs speed.
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
