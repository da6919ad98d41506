/** The `--cache SIZE` option of the commands that serve a restore point. */
import { parseBytes, VmvaultError } from '../core/index.js';

/** Smallest and largest decoded-chunk cache `--cache` accepts. */
const MIN_CACHE = 1 << 20;
const MAX_CACHE = 64 * 2 ** 30;

/**
 * The `--cache SIZE` option of commands that serve a restore point (mount, clone): bytes of
 * decoded chunks the live mount keeps, or undefined for the default (64 MiB).
 * @throws VmvaultError E_USAGE when SIZE is not a size between 1 MiB and 64 GiB.
 */
export function cacheOption(value: unknown): number | undefined {
  if (value === undefined) return undefined;
  const bytes = parseBytes(String(value));
  if (!Number.isFinite(bytes) || bytes < MIN_CACHE || bytes > MAX_CACHE) {
    throw new VmvaultError(
      'E_USAGE',
      `--cache takes a size from 1M to 64G (e.g. 256M), not ${String(value)}`,
    );
  }
  return bytes;
}
