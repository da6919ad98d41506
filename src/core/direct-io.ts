/**
 * Direct I/O (O_DIRECT) for writes of large, aligned extents: restored disks and pack files.
 *
 * Why: on the virtual machines vmvault runs on, buffered writes of fresh data cost more CPU
 * than anything else in a restore. Every page-cache page a write fills is new memory for the
 * hypervisor to back, and the kernel's copy into it ran at ~340 MB/s here (`perf`: 11 % of a
 * full backup's CPU in `copy_folio_from_iter_atomic` for its 250 MB of packs), while the same
 * bytes written with O_DIRECT from a reused buffer reach the device at ~1.2 GB/s with almost no
 * CPU (docs/benchmarks.md). Direct writes also leave nothing dirty for the final fsync.
 *
 * Rules O_DIRECT imposes and these helpers keep: buffer address, file offset and length are
 * multiples of {@link DIRECT_ALIGN} (4 KiB suits 512-byte and 4 KiB logical blocks alike). An
 * unaligned tail goes through an ordinary descriptor of the same file; the two never touch the
 * same page. Where the filesystem refuses O_DIRECT (some FUSE and network filesystems, tmpfs
 * before Linux 6.6) or a direct write fails with EINVAL, everything goes through the ordinary
 * descriptor. `VMVAULT_DIRECT_IO=0` turns direct writes off.
 */
import { closeSync, constants, openSync, write } from 'node:fs';
import { errnoCode } from './errors.js';
import { nativeAddon } from './native.js';

/** Alignment of direct writes: address, offset and length. */
export const DIRECT_ALIGN = 4096;

/**
 * A buffer of `size` bytes whose address is a multiple of {@link DIRECT_ALIGN}, or null when
 * the native addon (which tells the address) is missing.
 */
export function alignedBuffer(size: number): Buffer | null {
  const n = nativeAddon();
  if (!n?.alignOffset) return null;
  const raw = Buffer.allocUnsafeSlow(size + DIRECT_ALIGN);
  const skip = n.alignOffset(raw, DIRECT_ALIGN);
  return raw.subarray(skip, skip + size);
}

/**
 * Opens `path` (which must exist) for direct writes; null when the filesystem or platform
 * does not allow it, when no aligned buffers can be made, or when `VMVAULT_DIRECT_IO=0` turns
 * direct I/O off.
 */
export function openDirect(path: string): number | null {
  const flags = directWriteFlags();
  if (flags === null) return null;
  try {
    return openSync(path, flags);
  } catch {
    return null;
  }
}

/** Open flags for direct writes (O_WRONLY | O_DIRECT), or null where they cannot be used. */
export function directWriteFlags(): number | null {
  const flag = constants.O_DIRECT;
  if (flag === undefined || process.env.VMVAULT_DIRECT_IO === '0' || !nativeAddon()?.alignOffset) return null;
  return constants.O_WRONLY | flag;
}

/** Closes a descriptor from {@link openDirect} (null is fine); never throws. */
export function closeDirect(fd: number | null | undefined): void {
  if (fd === null || fd === undefined) return;
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}

function writeAllAsync(
  fd: number,
  buf: Uint8Array,
  from: number,
  length: number,
  position: number,
): Promise<number> {
  return new Promise((resolve, reject) => {
    let done = 0;
    const step = (): void => {
      if (done >= length) {
        resolve(done);
        return;
      }
      write(fd, buf, from + done, length - done, position + done, (err, n) => {
        if (err) reject(err);
        else if (n <= 0) resolve(done);
        else {
          done += n;
          step();
        }
      });
    };
    step();
  });
}

/**
 * Writes `length` bytes of `buf` (an {@link alignedBuffer} view starting at an aligned
 * address) at `position`, on the thread pool: the aligned part through `directFd` when there
 * is one, the rest through `fd`. Resolves false when a direct write failed with EINVAL (the
 * bytes then went through `fd`): the caller should stop using `directFd`. Other errors reject.
 */
export async function writeAlignedAsync(
  fd: number,
  directFd: number | null,
  buf: Uint8Array,
  length: number,
  position: number,
): Promise<boolean> {
  let done = 0;
  let ok = true;
  if (directFd !== null && position % DIRECT_ALIGN === 0) {
    try {
      done = await writeAllAsync(directFd, buf, 0, length - (length % DIRECT_ALIGN), position);
    } catch (err) {
      if (errnoCode(err) !== 'EINVAL') throw err;
      ok = false;
    }
  }
  if (done < length && (await writeAllAsync(fd, buf, done, length - done, position + done)) < length - done) {
    throw Object.assign(new Error(`short write at ${position + done}`), { code: 'EIO' });
  }
  return ok;
}

/**
 * A few aligned staging buffers of one size, made on first use and shared by the writers of one
 * thread: a writer that finds none free waits for one, so concurrent writers do not add memory.
 */
export class StagePool {
  private readonly free: Buffer[] = [];
  private made = 0;
  private readonly waiters: ((b: Buffer) => void)[] = [];

  constructor(
    readonly bytes: number,
    readonly max: number,
  ) {}

  /** A free buffer, or a promise of the next one given back. Throws without aligned memory. */
  take(): Buffer | Promise<Buffer> {
    const b = this.free.pop();
    if (b) return b;
    if (this.made < this.max) {
      const made = alignedBuffer(this.bytes);
      if (!made) throw new Error('no aligned memory for a direct write');
      this.made++;
      return made;
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Gives `b` back (to a waiting writer first). */
  give(b: Buffer): void {
    const w = this.waiters.shift();
    if (w) w(b);
    else this.free.push(b);
  }
}

/**
 * Writes extents of one file through staging buffers of a {@link StagePool}: bytes go into the
 * current stage ({@link reserve}, then {@link commit}), and a stage is written (on the thread
 * pool, direct where aligned) when the next extent does not follow it in the file or does not
 * fit, while the caller fills the next stage. {@link done} waits for every write.
 */
export class StagedWriter {
  private readonly writes: Promise<void>[] = [];
  private stage: Buffer | null = null;
  private start = 0;
  private used = 0;
  private refused = false;

  constructor(
    private readonly fd: number,
    private readonly directFd: number | null,
    private readonly pool: StagePool,
  ) {}

  /**
   * Runs `fill` with a writer over `fd` / `directFd`, then writes what is staged and waits for
   * every write. When `fill` throws, what is staged is given back unwritten, the writes already
   * started are waited for, and the error is rethrown. Resolves as {@link done} does.
   */
  static async run(
    fd: number,
    directFd: number | null,
    pool: StagePool,
    fill: (w: StagedWriter) => Promise<void>,
  ): Promise<boolean> {
    const w = new StagedWriter(fd, directFd, pool);
    try {
      await fill(w);
    } catch (err) {
      await w.done(true).catch(() => {});
      throw err;
    }
    return w.done();
  }

  /** Bytes the next {@link reserve} can take without a new stage (a whole stage when the current one is full or absent). */
  get room(): number {
    const free = this.pool.bytes - this.used;
    return this.stage && free > 0 ? free : this.pool.bytes;
  }

  /**
   * A view of `n` bytes (at most one stage) to fill with what goes at file offset `at`; call
   * {@link commit} once it holds them. Writes the current stage out first when `at` does not
   * follow it or `n` bytes do not fit.
   */
  async reserve(at: number, n: number): Promise<Buffer> {
    if (n > this.pool.bytes) throw new Error(`an extent of ${n} bytes is larger than a stage`);
    if (this.stage && (at !== this.start + this.used || this.used + n > this.pool.bytes)) this.flush();
    if (!this.stage) {
      const s = this.pool.take();
      this.stage = s instanceof Promise ? await s : s;
      this.start = at;
      this.used = 0;
    }
    return this.stage.subarray(this.used, this.used + n);
  }

  /** The `n` bytes of the last {@link reserve} are in place. */
  commit(n: number): void {
    this.used += n;
  }

  /** Starts writing the current stage, if it holds anything. */
  flush(): void {
    const b = this.stage;
    if (!b) return;
    this.stage = null;
    if (this.used === 0) {
      this.pool.give(b);
      return;
    }
    const write = writeAlignedAsync(this.fd, this.refused ? null : this.directFd, b, this.used, this.start);
    this.writes.push(
      write
        .then((ok) => {
          if (!ok) this.refused = true;
        })
        .finally(() => this.pool.give(b)),
    );
  }

  /**
   * Writes what is staged (unless `abandon`, which just gives the stage back) and waits for
   * every write, failed or not; throws the first failure. Resolves false when direct writes
   * were refused (EINVAL) on the way; the bytes then went through the ordinary descriptor.
   */
  async done(abandon = false): Promise<boolean> {
    if (abandon && this.stage) {
      this.pool.give(this.stage);
      this.stage = null;
    }
    this.flush();
    const settled = await Promise.allSettled(this.writes);
    const failed = settled.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    return !this.refused;
  }
}

/** Staging for {@link writeStaged}: 4 MiB buffers, 16 MiB in all per thread. */
const packStages = new StagePool(4 << 20, 4);

/**
 * Writes the concatenation of `parts` from offset 0 of a new file open as `fd` (ordinary) and
 * `directFd` (O_DIRECT), copied through aligned 4 MiB stages shared by all such writes of the
 * thread. For files written once and fsynced (pack files), where the copy costs far less than
 * the page cache would. Resolves false when direct writes were refused part-way (everything
 * was still written, through `fd`).
 */
export async function writeStaged(
  fd: number,
  directFd: number,
  parts: readonly Uint8Array[],
): Promise<boolean> {
  return StagedWriter.run(fd, directFd, packStages, async (w) => {
    let position = 0;
    for (const part of parts) {
      for (let from = 0; from < part.length; ) {
        const n = Math.min(part.length - from, w.room);
        (await w.reserve(position, n)).set(part.subarray(from, from + n));
        w.commit(n);
        from += n;
        position += n;
      }
    }
  });
}
