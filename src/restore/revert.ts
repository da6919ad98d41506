/**
 * Revert: rolls an existing disk (a raw file, a block device or a qcow2 image) back to a
 * restore point by writing only the chunks that differ. The target is read in large sequential
 * reads (holes and unallocated ranges are not read at all), every chunk is hashed on the codec
 * workers exactly as a backup names it (SHA-256, or HMAC-SHA-256 in an encrypted repository;
 * zero chunks get the zero digest), compared with the point's tree, and only chunks whose digest
 * differs are fetched from the repository and written (zeros where the point has a zero chunk).
 * Reading the next segment overlaps hashing and writing this one. The target is synced at the
 * end. A revert is done in place: one that fails part-way leaves a mix of old and reverted
 * chunks, and running it again finishes the job.
 */
import { type FileHandle, open } from 'node:fs/promises';
import { type Extent, isVmvaultError, type Slab, SlabPool, VmvaultError } from '../core/index.js';
import { BASE_ALLOCATION, NbdMultiClient } from '../protocols/nbd/index.js';
import {
  type CodecPool,
  type DiskRecord,
  fromHex,
  type Repository,
  ZERO_DIGEST,
} from '../repository/index.js';
import { probeImage, type QemuNbdServer, RawFileSource, startQemuNbd } from '../sources/index.js';
import { PointReader } from './point-reader.js';
import type { RestoreProgress } from './restore-disk.js';
import { statTarget } from './restore-target.js';

/** Progress of a running revert. `done` counts bytes compared. */
export interface RevertProgress extends RestoreProgress {
  /** Bytes read from the target. */
  bytesRead: number;
  /** Chunks written so far. */
  chunksWritten: number;
}

/** Options of {@link revertDisk}. */
export interface RevertOptions {
  onProgress?: (p: RevertProgress) => void;
  /**
   * How to open a regular file: `auto` (default) asks `qemu-img info` (raw when qemu-img is
   * missing); `raw` and `qcow2` skip probing. Pass the format for disks a guest controls: a raw
   * disk whose first bytes imitate a qcow2 header would otherwise be opened as qcow2. Devices
   * are always raw.
   */
  format?: 'auto' | 'raw' | 'qcow2';
  /**
   * Accept a target larger than the disk and revert only its first `disk.size` bytes (the rest
   * is left as it is). Without it a larger target is an error.
   */
  allowLarger?: boolean;
  /** Bytes per target read, rounded down to whole chunks; default 4 MiB. */
  readSize?: number;
}

/** What a revert did. */
export interface RevertResult {
  target: string;
  /** The format the target was opened as. */
  format: 'raw' | 'qcow2';
  /** Bytes compared (the disk size). */
  size: number;
  chunksCompared: number;
  chunksWritten: number;
  bytesWritten: number;
  /** Bytes read from the target (holes are not read). */
  bytesRead: number;
  /** True when a smaller raw file was extended to the disk size. */
  extended: boolean;
}

/** A disk being reverted: read, written, then synced. */
interface RevertTarget {
  readonly format: 'raw' | 'qcow2';
  readonly size: number;
  /** Ranges that may hold data, in order (everything else reads as zeros). */
  extents(): AsyncIterable<Extent>;
  readInto(buf: Buffer, offset: number): Promise<void>;
  write(buf: Buffer, offset: number): Promise<void>;
  writeZeros(offset: number, length: number): Promise<void>;
  /** Makes every write durable and releases the target. */
  finish(): Promise<void>;
  /** Releases the target after a failure. Never throws. */
  abort(): Promise<void>;
}

const DIGEST_SIZE = 32;
const ZEROS = Buffer.alloc(1 << 20);
/** Range of one block-status request to a qcow2 target. */
const STATUS_WINDOW = 1 << 30;

/** Reverts `target` to `disk` of a restore point, writing only the chunks that differ. */
export async function revertDisk(
  repo: Repository,
  pool: CodecPool,
  disk: DiskRecord,
  target: string,
  opts: RevertOptions = {},
): Promise<RevertResult> {
  const cs = disk.chunkSize;
  const size = disk.size;
  const chunkCount = Math.ceil(size / cs);
  const segChunks = Math.max(1, Math.floor((opts.readSize ?? 4 << 20) / cs));
  const { t, extended } = await openTarget(target, size, opts);
  const tree = repo.treeReader(fromHex(disk.root), size, cs);
  const point = new PointReader(repo, disk, { pool, readAheadChunks: 0, cacheBytes: 16 << 20 });
  const progress: RevertProgress = { done: 0, total: size, bytesWritten: 0, bytesRead: 0, chunksWritten: 0 };
  const slabs = new SlabPool(segChunks * cs, 3);
  let chunksCompared = 0;
  let pending: Promise<Segment | null> | null = null;

  try {
    const data = await dataRanges(t, size);
    let cursor = 0; // first data range that may still overlap a segment
    /** Reads segment [first, first+count) (data ranges only) and hashes it on the workers. */
    const readSegment = async (first: number, count: number): Promise<Segment> => {
      const start = first * cs;
      const len = Math.min(count * cs, size - start);
      const slab = await slabs.acquire();
      try {
        const buf = Buffer.from(slab.shared, 0, len);
        while (cursor < data.length && data[cursor]![1] <= start) cursor++;
        let pos = start;
        for (let k = cursor; k < data.length && data[k]![0] < start + len; k++) {
          // Whole chunks around each data range: a chunk is read once, holes are zero-filled.
          const a = Math.max(pos, Math.floor(data[k]![0] / cs) * cs);
          const b = Math.min(start + len, Math.ceil(data[k]![1] / cs) * cs);
          if (b <= a) continue;
          buf.fill(0, pos - start, a - start);
          await t.readInto(buf.subarray(a - start, b - start), a);
          progress.bytesRead += b - a;
          pos = b;
        }
        const n = Math.ceil(len / cs);
        // Nothing but holes: every chunk is a zero chunk, no need to hash.
        if (pos === start) return { first, n, slab, digests: Buffer.alloc(n * DIGEST_SIZE) };
        buf.fill(0, pos - start, len);
        const parts = Math.min(pool.size, n);
        const per = Math.ceil(n / parts) * cs;
        const hashed = await Promise.all(
          Array.from({ length: parts }, (_, k) =>
            pool.hashShared(slab.shared, k * per, Math.min(per, len - k * per), cs),
          ),
        );
        return { first, n, slab, digests: Buffer.concat(hashed) };
      } catch (err) {
        slabs.release(slab);
        throw err;
      }
    };
    const next = (first: number): Promise<Segment | null> | null =>
      first < chunkCount ? readSegment(first, Math.min(segChunks, chunkCount - first)) : null;

    pending = next(0);
    while (pending) {
      const seg = await pending;
      if (!seg) break;
      pending = next(seg.first + seg.n); // read ahead while this segment is compared and written
      pending?.catch(() => {}); // awaited on the next turn
      const differ: { index: number; zero: boolean }[] = [];
      try {
        for (let i = 0; i < seg.n; i++) {
          const index = seg.first + i;
          const mine = seg.digests.subarray(i * DIGEST_SIZE, (i + 1) * DIGEST_SIZE);
          const theirs = (await tree.lookup(index)) ?? ZERO_DIGEST;
          chunksCompared++;
          if (!mine.equals(theirs)) differ.push({ index, zero: theirs.equals(ZERO_DIGEST) });
        }
      } finally {
        slabs.release(seg.slab);
      }
      await writeChunks(t, point, differ, cs, size, progress);
      progress.done = Math.min(size, (seg.first + seg.n) * cs);
      opts.onProgress?.(progress);
    }
    await t.finish();
    progress.done = size;
    opts.onProgress?.(progress);
    return {
      target,
      format: t.format,
      size,
      chunksCompared,
      chunksWritten: progress.chunksWritten,
      bytesWritten: progress.bytesWritten,
      bytesRead: progress.bytesRead,
      extended,
    };
  } catch (err) {
    if (pending) await Promise.resolve(pending).catch(() => {});
    await t.abort();
    throw isVmvaultError(err)
      ? err
      : new VmvaultError('E_TARGET', `revert of ${target} failed: ${(err as Error).message}`, { cause: err });
  }
}

/** A segment of the target read and hashed: 32 bytes of digest per chunk. */
interface Segment {
  first: number;
  n: number;
  slab: Slab;
  digests: Buffer;
}

/** Writes the point's content of the chunks that differ (zeros for its zero chunks). */
async function writeChunks(
  t: RevertTarget,
  point: PointReader,
  differ: { index: number; zero: boolean }[],
  cs: number,
  size: number,
  progress: RevertProgress,
): Promise<void> {
  const work: Promise<void>[] = [];
  for (let k = 0; k < differ.length; ) {
    const d = differ[k]!;
    if (d.zero) {
      const len = Math.min(cs, size - d.index * cs);
      work.push(
        t.writeZeros(d.index * cs, len).then(() => {
          progress.bytesWritten += len;
          progress.chunksWritten++;
        }),
      );
      k++;
      continue;
    }
    // Consecutive data chunks are fetched as one batch (adjacent blobs, one pack read).
    let e = k + 1;
    while (e < differ.length && !differ[e]!.zero && differ[e]!.index === differ[e - 1]!.index + 1) e++;
    const first = d.index;
    const count = e - k;
    work.push(
      point.chunks(first, count).then(async (chunks) => {
        await Promise.all(
          chunks.map(async (c, j) => {
            if (!c) throw new VmvaultError('E_INTERNAL', `chunk ${first + j} changed while reverting`);
            await t.write(c, (first + j) * cs);
            progress.bytesWritten += c.length;
            progress.chunksWritten++;
          }),
        );
      }),
    );
    k = e;
  }
  const settled = await Promise.allSettled(work);
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/** The target's data ranges within [0, size), merged, as [start, end) pairs. */
async function dataRanges(t: RevertTarget, size: number): Promise<[number, number][]> {
  const out: [number, number][] = [];
  for await (const e of t.extents()) {
    if (!e.data || e.length === 0 || e.offset >= size) continue;
    const end = Math.min(size, e.offset + e.length);
    const prev = out[out.length - 1];
    if (prev && prev[1] >= e.offset) prev[1] = Math.max(prev[1], end);
    else out.push([e.offset, end]);
  }
  return out;
}

/** Opens the target in the right format and checks (or fixes) its size. */
async function openTarget(
  target: string,
  size: number,
  opts: RevertOptions,
): Promise<{ t: RevertTarget; extended: boolean }> {
  const st = await statTarget(target);
  if (!st)
    throw new VmvaultError('E_TARGET', `${target} does not exist`, {
      hint: 'restore the point to it instead',
    });
  if (!st.isFile() && !st.isBlockDevice()) {
    throw new VmvaultError('E_TARGET', `${target} is neither a file nor a block device`);
  }
  let format: 'raw' | 'qcow2' = opts.format === 'qcow2' ? 'qcow2' : 'raw';
  if (st.isBlockDevice()) {
    if (opts.format === 'qcow2')
      throw new VmvaultError('E_USAGE', `${target} is a block device, not a qcow2 image`);
  } else if ((opts.format ?? 'auto') === 'auto') {
    format = await probeFormat(target);
  }
  const tooLarge = (have: number): VmvaultError =>
    new VmvaultError('E_TARGET', `${target} holds ${have} bytes; the restore point's disk has ${size}`, {
      hint: 'allow a larger target to revert only its first bytes, or pick the right disk',
    });
  if (format === 'qcow2') {
    const t = await openQcow2(target);
    if (t.size > size && !opts.allowLarger) {
      await t.abort();
      throw tooLarge(t.size);
    }
    if (t.size < size) {
      await t.abort();
      throw new VmvaultError(
        'E_TARGET',
        `${target} holds ${t.size} bytes; the restore point's disk has ${size}`,
        {
          hint: `grow it first: qemu-img resize ${target} ${size}`,
        },
      );
    }
    return { t, extended: false };
  }
  const t = await openRaw(target, st.isBlockDevice());
  if (t.size > size && !opts.allowLarger) {
    await t.abort();
    throw tooLarge(t.size);
  }
  if (t.size < size) {
    await t.abort();
    if (st.isBlockDevice()) {
      throw new VmvaultError(
        'E_TARGET',
        `${target} holds ${t.size} bytes; the restore point's disk needs ${size}`,
      );
    }
    // A smaller raw file is extended (the new range reads as zeros and is compared like the rest).
    const fh = await open(target, 'r+');
    try {
      await fh.truncate(size);
    } finally {
      await fh.close();
    }
    return { t: await openRaw(target, false), extended: true };
  }
  return { t, extended: false };
}

/** The format of a regular file by `qemu-img info`; raw when qemu-img is not installed. */
async function probeFormat(target: string): Promise<'raw' | 'qcow2'> {
  let format: string;
  try {
    format = (await probeImage(target)).format;
  } catch (err) {
    if (isVmvaultError(err, 'E_UNSUPPORTED')) return 'raw';
    throw new VmvaultError('E_TARGET', `cannot revert ${target}: ${(err as Error).message}`, {
      cause: err,
      ...(isVmvaultError(err) && err.hint ? { hint: err.hint } : {}),
    });
  }
  if (format === 'raw' || format === 'qcow2') return format;
  throw new VmvaultError(
    'E_UNSUPPORTED',
    `${target} is a ${format} image; revert writes raw files, devices and qcow2`,
    {
      hint: `convert it with qemu-img convert -O qcow2, or restore the point to a new file`,
    },
  );
}

/** A raw file or device: read through {@link RawFileSource} (holes skipped), written in place. */
async function openRaw(target: string, device: boolean): Promise<RevertTarget> {
  const source = await RawFileSource.open(target);
  let fh: FileHandle;
  try {
    fh = await open(target, 'r+');
  } catch (err) {
    await source.close();
    throw new VmvaultError('E_TARGET', `cannot write ${target}: ${(err as Error).message}`, { cause: err });
  }
  const writeAll = async (buf: Buffer, offset: number): Promise<void> => {
    for (let done = 0; done < buf.length; ) {
      const { bytesWritten } = await fh.write(buf, done, buf.length - done, offset + done);
      done += bytesWritten;
    }
  };
  const close = async (): Promise<void> => {
    await Promise.allSettled([fh.close(), source.close()]);
  };
  return {
    format: 'raw',
    size: source.size,
    extents: () => (device ? allData(source.size) : source.extents()),
    readInto: (buf, offset) => source.readInto(buf, offset),
    write: writeAll,
    writeZeros: async (offset, length) => {
      for (let done = 0; done < length; done += ZEROS.length) {
        await writeAll(ZEROS.subarray(0, Math.min(ZEROS.length, length - done)), offset + done);
      }
    },
    finish: async () => {
      try {
        await fh.sync();
      } finally {
        await close();
      }
    },
    abort: close,
  };
}

/** A qcow2 image served by a writable qemu-nbd that vmvault starts and stops. */
async function openQcow2(target: string): Promise<RevertTarget> {
  let server: QemuNbdServer | undefined;
  let client: NbdMultiClient | undefined;
  const stop = async (): Promise<void> => {
    await client?.close().catch(() => {});
    await server?.stop().catch(() => {});
  };
  try {
    server = await startQemuNbd(target, { format: 'qcow2', readOnly: false });
    client = await connectRetrying(server.socketPath);
  } catch (err) {
    await stop();
    throw new VmvaultError('E_TARGET', `cannot open qcow2 image ${target}: ${(err as Error).message}`, {
      cause: err,
      ...(isVmvaultError(err) && err.hint ? { hint: err.hint } : {}),
    });
  }
  const c = client;
  const srv = server;
  return {
    format: 'qcow2',
    size: c.size,
    extents: async function* () {
      if (!c.primary.metaContexts.has(BASE_ALLOCATION)) {
        yield* allData(c.size);
        return;
      }
      for (let pos = 0; pos < c.size; pos += STATUS_WINDOW) {
        yield* await c.allocationMap(pos, Math.min(STATUS_WINDOW, c.size - pos));
      }
    },
    readInto: (buf, offset) => c.readInto(offset, buf),
    write: (buf, offset) => c.write(offset, buf),
    writeZeros: (offset, length) => c.writeZeroes(offset, length),
    finish: async () => {
      await c.flush();
      await stop();
      const code = srv.process.exitStatus()?.code;
      if (code !== 0 && code !== undefined && code !== null) {
        throw new VmvaultError('E_TARGET', `qemu-nbd failed while writing ${target} (exit code ${code})`);
      }
    },
    abort: stop,
  };
}

async function* allData(size: number): AsyncIterable<Extent> {
  if (size > 0) yield { offset: 0, length: size, data: true };
}

async function connectRetrying(socketPath: string): Promise<NbdMultiClient> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await NbdMultiClient.connect({
        socketPath,
        exportName: '',
        metaContexts: [BASE_ALLOCATION],
        connections: 4,
        requestTimeoutMs: 120_000,
      });
    } catch (err) {
      if (attempt >= 20) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
