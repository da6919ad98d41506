/** An export backed by a raw image file, using positioned reads and writes. */
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VmvaultError, errnoCode } from '../../core/errors.js';
import type { AllocationExtent, HeldSegments, NbdExport, ReadSegment } from './export.js';

interface NativeSeek {
  lseek(fd: number, offset: number, whence: number): number;
}

const SEEK_DATA = 3;
const SEEK_HOLE = 4;
/** Extents returned by one blockStatus call at most (the client asks again for the rest). */
const MAX_EXTENTS = 4096;
/** Bytes of read buffers kept for reuse (beyond it, buffers are left to the GC). */
const SPARE_LIMIT = 64 << 20;

let nativeCache: NativeSeek | null | undefined;

/** Loads the vmvault native addon (for SEEK_DATA/SEEK_HOLE); null when it is not built. */
export function loadNativeSeek(): NativeSeek | null {
  if (nativeCache !== undefined) return nativeCache;
  nativeCache = null;
  const require = createRequire(import.meta.url);
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    const candidate = join(dir, 'native', 'build', 'Release', 'vmvault_native.node');
    if (fs.existsSync(candidate)) {
      try {
        const mod = require(candidate) as Partial<NativeSeek>;
        if (typeof mod.lseek === 'function') nativeCache = mod as NativeSeek;
      } catch {
        // Built for another Node ABI or broken: fall back to "everything is data".
      }
      break;
    }
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return nativeCache;
}

function readAt(fd: number, buf: Buffer, pos: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let done = 0;
    const step = (): void => {
      fs.read(fd, buf, done, buf.length - done, pos + done, (err, n) => {
        if (err) return reject(err);
        if (n === 0) {
          buf.fill(0, done); // file shrank underneath us: read as zeros
          return resolve();
        }
        done += n;
        if (done < buf.length) step();
        else resolve();
      });
    };
    step();
  });
}

function writeAt(fd: number, buf: Buffer, pos: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let done = 0;
    const step = (): void => {
      fs.write(fd, buf, done, buf.length - done, pos + done, (err, n) => {
        if (err) return reject(err);
        done += n;
        if (done < buf.length) step();
        else resolve();
      });
    };
    step();
  });
}

/** Options of {@link FileExport.open}. */
export interface FileExportOptions {
  /** Open read-only (default true). */
  readOnly?: boolean;
  description?: string;
  /**
   * Answer reads with OFFSET_HOLE chunks for file holes (two lseek calls per read; default
   * false). Needs the native addon.
   */
  sparseReads?: boolean;
}

/**
 * A raw file (or block device) as an NBD export. `base:allocation` comes from SEEK_DATA /
 * SEEK_HOLE when the native addon is available; otherwise everything is reported as data.
 */
export class FileExport implements NbdExport {
  readonly multiConn = true;
  readonly readSparse?: (offset: number, length: number) => Promise<ReadSegment[]>;
  readonly readSparseHeld?: (offset: number, length: number) => Promise<HeldSegments>;
  private closed = false;
  /** Read buffers given back by the server, by size, for the next reads of that size. */
  private readonly spare = new Map<number, Buffer[]>();
  private spareBytes = 0;

  private constructor(
    private readonly fd: number,
    readonly size: number,
    readonly readOnly: boolean,
    readonly description: string | undefined,
    private readonly native: NativeSeek | null,
    sparseReads: boolean,
  ) {
    if (sparseReads && native) this.readSparse = (o, l) => this.sparse(o, l);
    else this.readSparseHeld = (o, l) => this.readHeld(o, l);
  }

  /**
   * A read into a buffer lent to the server and reused once the reply is sent: no allocation
   * and no garbage per request in a steady stream of same-sized reads.
   */
  private async readHeld(offset: number, length: number): Promise<HeldSegments> {
    const buf = this.takeSpare(length) ?? Buffer.allocUnsafeSlow(length);
    try {
      await readAt(this.fd, buf, offset);
    } catch (err) {
      this.giveBack(buf);
      throw err;
    }
    return { segments: [{ offset, length, data: buf }], release: () => this.giveBack(buf) };
  }

  private takeSpare(length: number): Buffer | undefined {
    const list = this.spare.get(length);
    const buf = list?.pop();
    if (!buf) return undefined;
    if (list!.length === 0) this.spare.delete(length);
    this.spareBytes -= length;
    return buf;
  }

  private giveBack(buf: Buffer): void {
    if (this.closed || this.spareBytes + buf.length > SPARE_LIMIT) return;
    const list = this.spare.get(buf.length);
    if (list) list.push(buf);
    else this.spare.set(buf.length, [buf]);
    this.spareBytes += buf.length;
  }

  /** Opens `path`. Throws E_SOURCE when it cannot be opened. */
  static async open(path: string, opts: FileExportOptions = {}): Promise<FileExport> {
    const readOnly = opts.readOnly ?? true;
    let fd: number;
    try {
      fd = fs.openSync(path, readOnly ? 'r' : 'r+');
    } catch (err) {
      throw new VmvaultError(
        'E_SOURCE',
        `cannot open '${path}' for export: ${errnoCode(err) ?? String(err)}`,
        {
          cause: err,
        },
      );
    }
    const st = fs.fstatSync(fd);
    let size = st.size;
    const native = loadNativeSeek();
    if (st.isBlockDevice() && native) {
      const m = native as unknown as { blkGetSize64?: (fd: number) => number };
      if (m.blkGetSize64) size = m.blkGetSize64(fd);
    }
    return new FileExport(
      fd,
      size,
      readOnly,
      opts.description,
      st.isFile() ? native : null,
      opts.sparseReads ?? false,
    );
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length);
    await readAt(this.fd, buf, offset);
    return buf;
  }

  private async sparse(offset: number, length: number): Promise<ReadSegment[]> {
    const ext = await this.blockStatus(offset, length);
    const out: ReadSegment[] = [];
    const end = offset + length;
    let pos = offset;
    for (const e of ext) {
      const t = Math.min(end, e.offset + e.length);
      if (t <= pos) continue;
      if (e.data) out.push({ offset: pos, length: t - pos, data: await this.read(pos, t - pos) });
      else out.push({ offset: pos, length: t - pos });
      pos = t;
    }
    if (pos < end) out.push({ offset: pos, length: end - pos, data: await this.read(pos, end - pos) });
    return out;
  }

  async blockStatus(offset: number, length: number): Promise<AllocationExtent[]> {
    const end = Math.min(this.size, offset + length);
    if (!this.native) return [{ offset, length: end - offset, data: true }];
    const out: AllocationExtent[] = [];
    let pos = offset;
    while (pos < end && out.length < MAX_EXTENTS) {
      const d = this.native.lseek(this.fd, pos, SEEK_DATA);
      if (d === -1 || d >= end) {
        out.push({ offset: pos, length: end - pos, data: false });
        break;
      }
      if (d > pos) {
        out.push({ offset: pos, length: d - pos, data: false });
        pos = d;
        continue;
      }
      const h = this.native.lseek(this.fd, pos, SEEK_HOLE);
      const t = Math.min(end, h === -1 ? this.size : h);
      out.push({ offset: pos, length: t - pos, data: true });
      pos = t;
    }
    return out;
  }

  async write(offset: number, data: Buffer): Promise<void> {
    await writeAt(this.fd, data, offset);
  }

  async flush(): Promise<void> {
    await new Promise<void>((resolve, reject) =>
      fs.fdatasync(this.fd, (err) => (err ? reject(err) : resolve())),
    );
  }

  /** Closes the file. Call after the server stopped serving it. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.spare.clear();
    this.spareBytes = 0;
    await new Promise<void>((resolve) => fs.close(this.fd, () => resolve()));
  }
}
