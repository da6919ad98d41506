/**
 * Raw disk images and block devices. Holes in sparse files are found with SEEK_DATA/SEEK_HOLE
 * (through the native addon) and never read; block devices report their size via BLKGETSIZE64.
 */
import { type FileHandle, open } from 'node:fs/promises';
import { type Extent, SEEK_DATA, SEEK_HOLE, VmvaultError, errnoCode, nativeAddon } from '../core/index.js';
import type { DiskSource } from './disk-source.js';

/** A raw image file or a block device opened read-only. */
export class RawFileSource implements DiskSource {
  readonly format = 'raw';

  private constructor(
    readonly path: string,
    readonly kind: 'file' | 'device',
    readonly size: number,
    private readonly fh: FileHandle,
  ) {}

  /** Opens a raw file or block device. */
  static async open(path: string): Promise<RawFileSource> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      const code = errnoCode(err);
      const why =
        code === 'ENOENT'
          ? 'it does not exist'
          : code === 'EACCES'
            ? 'permission denied'
            : (err as Error).message;
      throw new VmvaultError('E_SOURCE', `cannot open ${path}: ${why}`, { cause: err });
    }
    const st = await fh.stat();
    if (st.isFile()) return new RawFileSource(path, 'file', st.size, fh);
    if (st.isBlockDevice()) {
      const n = nativeAddon();
      const size = n ? n.blkGetSize64(fh.fd) : await probeSize(fh);
      return new RawFileSource(path, 'device', size, fh);
    }
    await fh.close();
    throw new VmvaultError('E_SOURCE', `${path} is neither a regular file nor a block device`);
  }

  async *extents(): AsyncIterable<Extent> {
    const n = nativeAddon();
    if (this.kind !== 'file' || !n) {
      if (this.size > 0) yield { offset: 0, length: this.size, data: true };
      return;
    }
    let pos = 0;
    while (pos < this.size) {
      const data = n.lseek(this.fh.fd, pos, SEEK_DATA);
      if (data < 0 || data >= this.size) {
        yield { offset: pos, length: this.size - pos, data: false };
        return;
      }
      if (data > pos) yield { offset: pos, length: data - pos, data: false };
      let hole = n.lseek(this.fh.fd, data, SEEK_HOLE);
      if (hole < 0 || hole > this.size) hole = this.size;
      yield { offset: data, length: hole - data, data: true };
      pos = hole;
    }
  }

  async readInto(buf: Buffer, offset: number): Promise<void> {
    // The file shrinking while we read it: reading the rest as zeros would be a lie.
    await readFully(
      this.fh,
      buf,
      offset,
      (at) => `${this.path} ended at ${at} while reading (was ${this.size} bytes)`,
    );
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/**
 * Fills `target` from `fh` at file offset `at` with positioned reads.
 * @throws VmvaultError `E_SOURCE` with `endMessage(offset)` when the file ends first.
 */
export async function readFully(
  fh: FileHandle,
  target: Buffer,
  at: number,
  endMessage: (offset: number) => string,
): Promise<void> {
  let done = 0;
  while (done < target.length) {
    const { bytesRead } = await fh.read(target, done, target.length - done, at + done);
    if (bytesRead === 0) throw new VmvaultError('E_SOURCE', endMessage(at + done));
    done += bytesRead;
  }
}

/** Size of a device without the addon: Node has no lseek(SEEK_END), so binary-search reads. */
async function probeSize(fh: FileHandle): Promise<number> {
  const one = Buffer.alloc(1);
  let lo = 0;
  let hi = 1;
  while ((await fh.read(one, 0, 1, hi - 1)).bytesRead === 1) {
    lo = hi;
    hi *= 2;
  }
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if ((await fh.read(one, 0, 1, mid - 1)).bytesRead === 1) lo = mid;
    else hi = mid;
  }
  return lo;
}
