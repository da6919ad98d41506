/**
 * A {@link DiskSource} over the fleecing export of one VM disk: the disk frozen at the point in
 * time, read with our NBD client. In bitmap mode it reports only dirty chunks as data and marks
 * the rest unchanged, so the pipeline copies them from the parent point.
 */
import type { Extent } from '../../core/index.js';
import { toExtents } from '../../protocols/nbd/client-block-status.js';
// The client alone: the NBD package index would load the server too.
import { NbdClient } from '../../protocols/nbd/client.js';
import { NBD_STATE_DIRTY, NBD_STATE_ZERO, QEMU_DIRTY_BITMAP_PREFIX } from '../../protocols/nbd/constants.js';
import type { DiskSource, SourceExtent } from '../../sources/index.js';
import { composeExtents } from './extents.js';
import type { PatchSource } from './patch-disk.js';
import { ReadAhead } from './read-ahead.js';
import { trace } from './trace.js';

/** Options of {@link FleeceSource.connect}. */
export interface FleeceSourceOptions {
  /** Unix socket of QEMU's NBD server. */
  socketPath: string;
  exportName: string;
  /** The bitmap to read dirty extents from (bitmap mode), or none (read all allocated data). */
  bitmap?: string | undefined;
  chunkSize: number;
  /** For the record: `qmp:<socket>#<node>`. */
  path: string;
  format: string;
}

const BASE_ALLOCATION = 'base:allocation';
/** Per NBD request: QEMU may be slow under a busy guest, never this slow. */
const REQUEST_TIMEOUT_MS = 120_000;

/** One disk's fleecing export as a backup source. */
export class FleeceSource implements DiskSource {
  readonly kind = 'qemu-vm';
  /** Bytes the dirty bitmap reported (bitmap mode), after {@link extents} ran. */
  dirtyBytes = 0;

  private readonly ahead: ReadAhead;

  private constructor(
    /** The NBD connection (a `BlockReader` too, for the priority scan). */
    readonly client: NbdClient,
    private readonly opts: FleeceSourceOptions,
  ) {
    this.ahead = new ReadAhead((offset, length) => client.read(offset, length), opts.chunkSize);
  }

  /** Connects to the export, selecting `base:allocation` and the bitmap's context. */
  static async connect(opts: FleeceSourceOptions): Promise<FleeceSource> {
    const metaContexts = [BASE_ALLOCATION];
    if (opts.bitmap) metaContexts.push(`${QEMU_DIRTY_BITMAP_PREFIX}${opts.bitmap}`);
    const client = await NbdClient.connect({
      socketPath: opts.socketPath,
      exportName: opts.exportName,
      metaContexts,
      requestTimeoutMs: REQUEST_TIMEOUT_MS,
      // A batch of an incremental is hundreds of 64 KiB reads: all go out in one writev, and
      // QEMU takes them 16 at a time from its socket.
      maxInFlight: 1024,
    });
    return new FleeceSource(client, opts);
  }

  /**
   * A second connection to the export (no metadata contexts), for small reads that must not
   * queue behind the backup's: QEMU serves each connection's requests 16 at a time.
   */
  connectAnother(): Promise<NbdClient> {
    return NbdClient.connect({
      socketPath: this.opts.socketPath,
      exportName: this.opts.exportName,
      requestTimeoutMs: REQUEST_TIMEOUT_MS,
    });
  }

  get path(): string {
    return this.opts.path;
  }

  get format(): string {
    return this.opts.format;
  }

  get size(): number {
    return this.client.size;
  }

  /**
   * Allocation and (bitmap mode) dirty extents in one block-status pass over the export, as the
   * chunk-aligned extents the backup reads.
   */
  private async plannedExtents(): Promise<SourceExtent[]> {
    const bitmapContext = this.opts.bitmap ? `${QEMU_DIRTY_BITMAP_PREFIX}${this.opts.bitmap}` : undefined;
    const status = await this.client.blockStatusRange(
      0,
      this.size,
      bitmapContext ? [BASE_ALLOCATION, bitmapContext] : [BASE_ALLOCATION],
    );
    const allocation = toExtents(status.get(BASE_ALLOCATION)!, (f) => (f & NBD_STATE_ZERO) === 0);
    let dirty: Extent[] | undefined;
    if (bitmapContext) {
      dirty = toExtents(status.get(bitmapContext)!, (f) => (f & NBD_STATE_DIRTY) !== 0);
      this.dirtyBytes = dirty.filter((e) => e.data).reduce((s, e) => s + e.length, 0);
    }
    return composeExtents(this.size, this.opts.chunkSize, allocation, dirty);
  }

  async *extents(): AsyncIterable<SourceExtent> {
    const extents = await this.plannedExtents();
    this.ahead.plan(extents, this.size);
    yield* extents;
  }

  /**
   * The source as {@link patchDisk} reads it (bitmap mode): the planned extents, and reads that
   * go straight to the NBD connection with any number in flight.
   */
  async patchSource(): Promise<PatchSource> {
    const extents = await this.plannedExtents();
    trace('extents');
    return {
      size: this.size,
      extents,
      read: (offset, target) => this.client.readInto(offset, target),
      record: { kind: this.kind, path: this.path, format: this.format },
    };
  }

  readInto(buf: Buffer, offset: number): Promise<void> {
    return this.ahead.readInto(buf, offset);
  }

  close(): Promise<void> {
    return this.client.close();
  }
}
