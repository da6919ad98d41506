/**
 * Turns what the user typed after `vmvault backup` into a {@link DiskSource}: a raw image or
 * block device today; images of other formats and NBD URIs are added here.
 */
import type { DiskSource } from './disk-source.js';
import { RawFileSource } from './raw-file.js';

/** Opens the source named by `spec` (a path or URI). The caller closes it. */
export async function openSource(spec: string): Promise<DiskSource> {
  return RawFileSource.open(spec);
}
