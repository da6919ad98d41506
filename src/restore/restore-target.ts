/**
 * Where a full restore writes: a sparse raw file (written under a temporary name and renamed
 * when complete), a block device (zero chunks written as zeros), or a thin qcow2 image
 * (`qcow2-target.ts`). The restore pipeline writes data chunks through this interface only.
 */
import { type FileHandle, open, rename, stat, unlink } from 'node:fs/promises';
import { closeDirect, errnoCode, nativeAddon, openDirect, VmvaultError } from '../core/index.js';

/** A restore destination. */
export interface RestoreTarget {
  /** True when ranges not written keep old content, so zero chunks must be written (devices). */
  readonly needsZeros: boolean;
  /** Writes `buf` at `offset`. */
  write(buf: Buffer, offset: number): Promise<void>;
  /** Writes zeros over a range (only called when {@link needsZeros}). */
  writeZeros(offset: number, length: number): Promise<void>;
  /** Makes everything durable and puts the result in place. */
  finalize(): Promise<void>;
  /**
   * A file descriptor that accepts positioned writes of decoded chunks directly (files and
   * devices), so worker threads write without handing data back; absent for targets that must
   * be written through {@link write}.
   */
  readonly fd?: number;
  /**
   * The same target opened with O_DIRECT (`core/direct-io.ts`), for worker writes of aligned
   * extents that bypass the page cache; absent where direct I/O is not possible.
   */
  readonly directFd?: number;
  /**
   * Starts writing back what was written so far without waiting, so the final flush in
   * {@link finalize} has little left to do. Optional.
   */
  startWriteback?(): void;
  /** Makes what was written so far durable (checkpoints of resumable restores). */
  sync?(): Promise<void>;
  /**
   * Gives up: releases resources and removes partial results, or keeps them with `keep`
   * (a later restore with `resume` continues them). Never throws.
   */
  abort(keep?: boolean): Promise<void>;
}

const ZEROS = Buffer.alloc(1 << 20);

/** What is at `target` now: null when nothing. Other stat failures are E_TARGET errors. */
export async function statTarget(target: string): Promise<import('node:fs').Stats | null> {
  try {
    return await stat(target);
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT')
      throw new VmvaultError('E_TARGET', `cannot use ${target}: ${(err as Error).message}`);
    return null;
  }
}

/** Refuses to replace an existing non-file, or an existing file without `force`. */
export function checkReplaceable(target: string, st: import('node:fs').Stats | null, force: boolean): void {
  if (st && !st.isFile())
    throw new VmvaultError('E_TARGET', `${target} is neither a file nor a block device`);
  if (st && !force) {
    throw new VmvaultError('E_TARGET', `${target} already exists`, {
      hint: 'pass --force to overwrite it, or choose another path',
    });
  }
}

async function writeAll(fh: FileHandle, buf: Buffer, offset: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, offset + done);
    done += bytesWritten;
  }
}

async function writeZerosTo(fh: FileHandle, offset: number, length: number): Promise<void> {
  for (let done = 0; done < length; ) {
    const n = Math.min(ZEROS.length, length - done);
    await writeAll(fh, ZEROS.subarray(0, n), offset + done);
    done += n;
  }
}

/** Opens a raw target: a block device written in place, or a sparse file created beside it. */
export async function openRawTarget(
  target: string,
  size: number,
  force: boolean,
  opts: { resume?: boolean } = {},
): Promise<RestoreTarget> {
  const st = await statTarget(target);
  if (st?.isBlockDevice()) {
    const fh = await open(target, 'r+');
    const n = nativeAddon();
    const devSize = n ? n.blkGetSize64(fh.fd) : Number.POSITIVE_INFINITY;
    if (devSize < size) {
      await fh.close();
      throw new VmvaultError('E_TARGET', `${target} holds ${devSize} bytes; the disk needs ${size}`);
    }
    const direct = openDirect(target);
    return {
      needsZeros: true,
      fd: fh.fd,
      ...(direct !== null ? { directFd: direct } : {}),
      write: (buf, offset) => writeAll(fh, buf, offset),
      writeZeros: (offset, length) => writeZerosTo(fh, offset, length),
      sync: () => fh.datasync(),
      finalize: async () => {
        await fh.sync();
        closeDirect(direct);
        await fh.close();
      },
      abort: async () => {
        closeDirect(direct);
        await fh.close().catch(() => {});
      },
    };
  }
  const tmp = `${target}.vmvault-partial`;
  const resuming = opts.resume === true && (await statTarget(tmp))?.isFile() === true;
  if (!resuming) checkReplaceable(target, st, force);
  let writeback: Promise<void> | null = null;
  const fh = await open(tmp, resuming ? 'r+' : 'w').catch((err: unknown) => {
    throw new VmvaultError('E_TARGET', `cannot create ${tmp}: ${(err as Error).message}`);
  });
  await fh.truncate(size);
  const direct = openDirect(tmp);
  return {
    needsZeros: false,
    fd: fh.fd,
    ...(direct !== null ? { directFd: direct } : {}),
    write: (buf, offset) => writeAll(fh, buf, offset),
    writeZeros: (offset, length) => writeZerosTo(fh, offset, length),
    startWriteback: () => {
      writeback ??= fh
        .datasync()
        .catch(() => {}) // finalize's fsync reports real errors
        .finally(() => {
          writeback = null;
        });
    },
    sync: async () => {
      await writeback;
      await fh.datasync();
    },
    finalize: async () => {
      await writeback;
      await fh.sync();
      closeDirect(direct);
      await fh.close();
      await rename(tmp, target);
    },
    abort: async (keep) => {
      closeDirect(direct);
      await fh.close().catch(() => {});
      if (!keep) await unlink(tmp).catch(() => {});
    },
  };
}
