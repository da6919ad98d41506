/**
 * An overlay file: the local, writable layer over one disk of a restore point. It holds the
 * chunks written since it was created (at their own offsets in a sparse data area) and two
 * bitmaps saying which chunks it holds and which of those read as zeros; the restore point is
 * never changed. This class owns the file and its durability rules; {@link OverlayExport} gives
 * it NBD semantics and {@link saveOverlay} turns it into a new restore point.
 *
 * Durability: a bit is set in memory only after the chunk's bytes are written to the file, and
 * {@link Overlay.flush} makes the data durable (fdatasync) before it writes the changed bitmap
 * pages, so a bit on disk never points at data that is not there. A reopened overlay has every
 * write flushed before a crash; later writes may or may not be there, chunk by chunk.
 */
import { randomBytes } from 'node:crypto';
import { type FileHandle, link, open, rename, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { errnoCode, VmvaultError } from '../core/index.js';
import { type BitmapPage, type ChunkState, ChunkBitmaps } from './bitmap.js';
import {
  BITMAP_PAGE,
  checkIdentity,
  decodeHeader,
  encodeHeader,
  encodeHolder,
  HEADER_BLOCK,
  layoutFor,
  OVERLAY_MAGIC,
  type OverlayHeader,
  type OverlayHolder,
  OverlayState,
  STATE_RANGE,
} from './format.js';

/** Which restore point and disk an overlay belongs to. */
export interface OverlayIdentity {
  /** Full id of the restore point (16 hex digits). */
  pointId: string;
  /** Name of the disk inside the point. */
  disk: string;
}

/** Options of {@link Overlay.create}. */
export interface OverlayCreateOptions extends OverlayIdentity {
  /** Disk size in bytes. */
  size: number;
  /** Chunk size of the point's tree. */
  chunkSize: number;
}

/** Options of {@link Overlay.open}: what the overlay must belong to, and overrides. */
export interface OverlayOpenOptions extends Partial<OverlayCreateOptions> {
  /**
   * Open even when the header says another live process on this host has it open (use only
   * when that process is known not to be a vmvault using it).
   */
  force?: boolean;
}

/** How many chunks an overlay holds. */
export interface OverlayCounts {
  /** Chunks whose bytes are in the data area. */
  dataChunks: number;
  /** Chunks that read as zeros (written zeroes or trimmed). */
  zeroChunks: number;
}

/** An open overlay file. */
export class Overlay {
  readonly pointId: string;
  readonly disk: string;
  readonly size: number;
  readonly chunkSize: number;
  readonly chunkCount: number;
  /** Where chunk 0's slot starts in the file. */
  readonly dataOffset: number;
  /** When the overlay was created. */
  readonly createdAt: Date;
  /**
   * True when the overlay was not closed cleanly last time (the process died or the machine
   * crashed): every flushed write is there, later ones may be missing.
   */
  readonly uncleanShutdown: boolean;
  private readonly bitmaps: ChunkBitmaps;
  private readonly bitmapOffset: number;
  private flushing: Promise<void> = Promise.resolve();
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    header: OverlayHeader,
    region: Buffer,
    unclean: boolean,
  ) {
    this.pointId = header.pointId;
    this.disk = header.disk;
    this.size = header.size;
    this.chunkSize = header.chunkSize;
    this.chunkCount = Math.ceil(header.size / header.chunkSize);
    this.dataOffset = header.dataOffset;
    this.bitmapOffset = header.bitmapOffset;
    this.createdAt = new Date(header.createdAt);
    this.uncleanShutdown = unclean;
    this.bitmaps = new ChunkBitmaps(region, header.bitmapBytes, this.chunkCount);
  }

  /**
   * Creates a new, empty overlay at `path` (which must not exist). The file is written under a
   * temporary name, made durable and then linked into place, so a crash never leaves a
   * half-made overlay.
   */
  static async create(path: string, opts: OverlayCreateOptions): Promise<Overlay> {
    checkIdentity(opts.pointId, opts.disk);
    if (!Number.isSafeInteger(opts.size) || opts.size <= 0) {
      throw new VmvaultError('E_USAGE', `overlay disk size must be a positive byte count, not ${opts.size}`);
    }
    const cs = opts.chunkSize;
    if (!Number.isInteger(cs) || cs < 512 || (cs & (cs - 1)) !== 0 || cs > 1 << 30) {
      throw new VmvaultError('E_USAGE', `overlay chunk size must be a power of two, not ${cs}`);
    }
    if (await exists(path)) {
      throw new VmvaultError('E_TARGET', `overlay ${path} already exists`, {
        hint: 'open it to continue where it left off, or discard it first',
      });
    }
    const header: OverlayHeader = {
      ...layoutFor(opts.size, cs),
      pointId: opts.pointId,
      disk: opts.disk,
      createdAt: Date.now(),
    };
    const tmp = `${path}.tmp-${randomBytes(6).toString('hex')}`;
    let fh: FileHandle;
    try {
      fh = await open(tmp, 'wx+');
    } catch (err) {
      throw new VmvaultError('E_TARGET', `cannot create overlay ${path}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    try {
      await writeFully(fh, encodeHeader(header, ourHolder()), 0);
      // Bitmaps and data area start as holes: nothing is in the overlay yet.
      await fh.truncate(header.dataOffset + header.size);
      await fh.datasync();
      await placeNew(tmp, path);
      await syncDir(dirname(path));
    } catch (err) {
      await fh.close().catch(() => {});
      await unlink(tmp).catch(() => {});
      const why = errnoCode(err) === 'EEXIST' ? 'it already exists' : (err as Error).message;
      throw new VmvaultError('E_TARGET', `cannot create overlay ${path}: ${why}`, { cause: err });
    }
    const region = Buffer.alloc(2 * header.bitmapBytes);
    return new Overlay(path, fh, header, region, false);
  }

  /**
   * Opens an existing overlay. When `opts` names a point, disk, size or chunk size, the overlay
   * must match them (`E_USAGE` otherwise: it belongs to another disk). A damaged or truncated
   * file is `E_CORRUPT`; an overlay that another live process on this host holds is `E_LOCKED`.
   */
  static async open(path: string, opts: OverlayOpenOptions = {}): Promise<Overlay> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r+');
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'ENOENT') {
        throw new VmvaultError('E_NOT_FOUND', `overlay ${path} does not exist`, { cause: err });
      }
      throw new VmvaultError('E_TARGET', `cannot open overlay ${path}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new VmvaultError('E_USAGE', `overlay ${path} is not a regular file`);
      const block = Buffer.alloc(Math.min(HEADER_BLOCK, st.size));
      await readFully(fh, block, 0, path);
      const { header, holder } = decodeHeader(block, path, st.size);
      checkBelongs(path, header, opts);
      checkHolder(path, holder, opts.force ?? false);
      const region = Buffer.alloc(2 * header.bitmapBytes);
      await readFully(fh, region, header.bitmapOffset, path);
      const ov = new Overlay(path, fh, header, region, holder.state !== OverlayState.closed);
      if (ov.bitmaps.hasBitsPastEnd()) {
        throw new VmvaultError('E_CORRUPT', `overlay ${path} is damaged: bitmap bits set past the disk end`, {
          hint: 'discard it (its writes are lost) or restore it from a copy',
        });
      }
      await writeFully(fh, encodeHolder(ourHolder()), STATE_RANGE.offset);
      await fh.datasync();
      return ov;
    } catch (err) {
      await fh.close().catch(() => {});
      throw err;
    }
  }

  /**
   * Opens the overlay at `path` when it exists (checked against `opts` like {@link open}),
   * else creates it.
   */
  static async openOrCreate(path: string, opts: OverlayCreateOptions): Promise<Overlay> {
    if (await exists(path)) return Overlay.open(path, opts);
    return Overlay.create(path, opts);
  }

  /** Where chunk `i`'s content is now. */
  state(i: number): ChunkState {
    return this.bitmaps.state(i);
  }

  /** Bytes in chunk `i` (the last chunk may be short). */
  chunkLength(i: number): number {
    return Math.min(this.chunkSize, this.size - i * this.chunkSize);
  }

  /** Chunk numbers whose content is in the overlay (written or zeroed), ascending. */
  dirtyChunks(): number[] {
    return this.bitmaps.chunks();
  }

  /** How many chunks the overlay holds, by kind. */
  counts(): OverlayCounts {
    const c = this.bitmaps.counts();
    return { dataChunks: c.data, zeroChunks: c.zero };
  }

  /**
   * Reads `buf.length` bytes of the data area at disk offset `offset` (meaningful only for
   * chunks in state `data`).
   */
  async readAt(offset: number, buf: Buffer): Promise<void> {
    this.checkOpen();
    await readFully(this.fh, buf, this.dataOffset + offset, this.path);
  }

  /** Writes `buf` into the data area at disk offset `offset`. Does not change any bit. */
  async writeAt(offset: number, buf: Buffer): Promise<void> {
    this.checkOpen();
    await writeFully(this.fh, buf, this.dataOffset + offset);
  }

  /** Marks chunk `i` as held in the data area; call only after its bytes were written. */
  markData(i: number): void {
    this.bitmaps.setData(i);
  }

  /** Marks chunk `i` as reading zeros. */
  markZero(i: number): void {
    this.bitmaps.setZero(i);
  }

  /**
   * Makes every write completed so far durable: fdatasync of the data, then the bitmap pages
   * changed since the last flush, then fdatasync again. Flushes run one at a time.
   */
  flush(): Promise<void> {
    const run = this.flushing.then(() => this.flushNow());
    this.flushing = run.catch(() => {});
    return run;
  }

  private async flushNow(): Promise<void> {
    this.checkOpen();
    // Copy the pages first: bits set from here on may point at data the sync below misses.
    const pages = this.bitmaps.takeDirty();
    try {
      await this.fh.datasync();
      if (pages.length === 0) return;
      for (const run of pageRuns(pages)) {
        await writeFully(this.fh, run.bytes, this.bitmapOffset + run.page * BITMAP_PAGE);
      }
      await this.fh.datasync();
    } catch (err) {
      this.bitmaps.redirty(pages);
      throw new VmvaultError('E_IO', `cannot flush overlay ${this.path}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  /** Flushes, marks the overlay closed cleanly and closes the file. Safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      await this.flush();
      await writeFully(
        this.fh,
        encodeHolder({ state: OverlayState.closed, pid: 0, host: '' }),
        STATE_RANGE.offset,
      );
      await this.fh.datasync();
    } finally {
      this.closed = true;
      await this.fh.close();
    }
  }

  /** Closes the file without flushing or marking it closed (tests simulate a crash with it). */
  async abandon(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }

  /** Closes the overlay without saving and deletes its file: every write in it is dropped. */
  async discard(): Promise<void> {
    await this.abandon();
    await discardOverlay(this.path);
  }

  private checkOpen(): void {
    if (this.closed) throw new VmvaultError('E_CLOSED', `overlay ${this.path} is closed`);
  }
}

/**
 * Deletes the overlay file at `path`: its writes are dropped for good. Refuses a file that is
 * not an overlay; returns false when there was nothing to delete.
 */
export async function discardOverlay(path: string): Promise<boolean> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return false;
    throw new VmvaultError('E_TARGET', `cannot discard overlay ${path}: ${(err as Error).message}`);
  }
  try {
    const head = Buffer.alloc(8);
    const { bytesRead } = await fh.read(head, 0, 8, 0);
    // A damaged overlay may be discarded; a file that was never one is left alone.
    if (bytesRead === 8 && !head.equals(OVERLAY_MAGIC)) {
      throw new VmvaultError('E_USAGE', `${path} is not a vmvault overlay file; not deleting it`);
    }
  } finally {
    await fh.close();
  }
  await unlink(path);
  await syncDir(dirname(path)).catch(() => {});
  return true;
}

function ourHolder(): OverlayHolder {
  return { state: OverlayState.open, pid: process.pid, host: hostname() };
}

function checkBelongs(path: string, h: OverlayHeader, want: OverlayOpenOptions): void {
  const mismatch =
    (want.pointId !== undefined && want.pointId !== h.pointId) ||
    (want.disk !== undefined && want.disk !== h.disk);
  if (mismatch) {
    throw new VmvaultError(
      'E_USAGE',
      `overlay ${path} belongs to restore point ${h.pointId} disk ${h.disk}, not ${want.pointId ?? h.pointId} disk ${want.disk ?? h.disk}`,
      {
        hint: `mount ${h.pointId} with it, or use another overlay file`,
        details: { path, pointId: h.pointId, disk: h.disk },
      },
    );
  }
  if (
    (want.size !== undefined && want.size !== h.size) ||
    (want.chunkSize !== undefined && want.chunkSize !== h.chunkSize)
  ) {
    throw new VmvaultError(
      'E_USAGE',
      `overlay ${path} is for a disk of ${h.size} bytes in ${h.chunkSize}-byte chunks, not ${want.size ?? h.size} in ${want.chunkSize ?? h.chunkSize}`,
      { details: { path } },
    );
  }
}

function checkHolder(path: string, holder: OverlayHolder, force: boolean): void {
  if (force || holder.state === OverlayState.closed || holder.pid === process.pid) return;
  if (holder.host !== hostname() || !alive(holder.pid)) return; // a crash left it marked open
  throw new VmvaultError('E_LOCKED', `overlay ${path} is in use by process ${holder.pid}`, {
    hint: 'stop the mount that uses it first',
    details: { path, pid: holder.pid },
  });
}

function alive(pid: number): boolean {
  if (pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errnoCode(err) === 'EPERM';
  }
}

/** Merges adjacent pages into one write each. */
function pageRuns(pages: BitmapPage[]): BitmapPage[] {
  const out: BitmapPage[] = [];
  let cur: { page: number; parts: Buffer[] } | null = null;
  for (const p of pages) {
    if (cur && cur.page + cur.parts.length === p.page) cur.parts.push(p.bytes);
    else {
      if (cur) out.push({ page: cur.page, bytes: Buffer.concat(cur.parts) });
      cur = { page: p.page, parts: [p.bytes] };
    }
  }
  if (cur) out.push({ page: cur.page, bytes: Buffer.concat(cur.parts) });
  return out;
}

/**
 * Moves `tmp` to `path` without replacing a file that appeared there meanwhile: link() refuses
 * to (rename would not); filesystems without hard links fall back to rename.
 */
async function placeNew(tmp: string, path: string): Promise<void> {
  try {
    await link(tmp, path);
  } catch (err) {
    const code = errnoCode(err);
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'EMLINK') throw err;
    await rename(tmp, path);
    return;
  }
  await unlink(tmp);
}

async function exists(path: string): Promise<boolean> {
  try {
    const fh = await open(path, 'r');
    await fh.close();
    return true;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return false;
    throw new VmvaultError('E_TARGET', `cannot use overlay ${path}: ${(err as Error).message}`);
  }
}

async function readFully(fh: FileHandle, buf: Buffer, position: number, path: string): Promise<void> {
  for (let done = 0; done < buf.length; ) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, position + done);
    if (bytesRead === 0) {
      throw new VmvaultError('E_CORRUPT', `overlay ${path} is truncated at ${position + done}`, {
        hint: 'discard it (its writes are lost) or restore it from a copy',
      });
    }
    done += bytesRead;
  }
}

async function writeFully(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  for (let done = 0; done < buf.length; ) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done);
    done += bytesWritten;
  }
}

async function syncDir(dir: string): Promise<void> {
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}
