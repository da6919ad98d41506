/**
 * Turns what the user typed after `vmvault backup` into a {@link DiskSource}:
 * - `nbd://host[:port]/export` and `nbd+unix:///export?socket=PATH`: an NBD export
 *   ({@link NbdSource});
 * - a path: its format is detected with `qemu-img info`; raw images and block devices are read
 *   directly ({@link RawFileSource}, the fastest path), every other format QEMU opens (qcow2,
 *   vmdk, vhdx, vdi, ...) through a qemu-nbd that vmvault starts and stops.
 */
import { isVmvaultError, VmvaultError } from '../core/index.js';
import { parseNbdUri } from '../protocols/nbd/index.js';
import type { DiskSource } from './disk-source.js';
import { NbdSource } from './nbd-source.js';
import { type ImageInfo, isLocalPath, openQemuImage, probeImage } from './qemu-image-source.js';
import { RawFileSource } from './raw-file.js';

/** Options of {@link openSource}. */
export interface OpenSourceOptions {
  /**
   * The image format, when known: skips probing (recommended for images a guest controls, whose
   * first bytes could imitate another format). Ignored for NBD URIs.
   */
  format?: string;
}

/** Opens the source named by `spec` (a path or NBD URI). The caller closes it. */
export async function openSource(spec: string, opts: OpenSourceOptions = {}): Promise<DiskSource> {
  if (/^nbds?(\+unix)?:\/\//.test(spec)) {
    parseNbdUri(spec); // E_USAGE with the reason for a malformed URI
    return NbdSource.connect({ uri: spec });
  }
  // Missing files, directories and permission problems: RawFileSource says it best.
  if (!(await isLocalPath(spec))) return RawFileSource.open(spec);
  let format = opts.format;
  let info: ImageInfo | undefined;
  if (format === undefined) {
    try {
      info = await probeImage(spec);
      format = info.format;
    } catch (err) {
      // Without qemu-img only raw images can be read.
      if (isVmvaultError(err, 'E_UNSUPPORTED')) return RawFileSource.open(spec);
      throw err;
    }
  }
  if (format === 'raw') return RawFileSource.open(spec);
  if (!/^[a-z0-9_-]+$/.test(format)) throw new VmvaultError('E_USAGE', `unknown image format '${format}'`);
  return openQemuImage(spec, format, info);
}
