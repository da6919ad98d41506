/**
 * A {@link DiskSource} over the fleecing export of one VM disk: the disk frozen at the point in
 * time, read with our NBD client. In bitmap mode it reports only dirty chunks as data and marks
 * the rest unchanged, so the pipeline copies them from the parent point.
 */
import { NbdClient } from '../../protocols/nbd/index.js';
import type { DiskSource, SourceExtent } from '../../sources/index.js';
import { composeExtents } from './extents.js';
import { ReadAhead } from './read-ahead.js';

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
    if (opts.bitmap) metaContexts.push(`qemu:dirty-bitmap:${opts.bitmap}`);
    const client = await NbdClient.connect({
      socketPath: opts.socketPath,
      exportName: opts.exportName,
      metaContexts,
      requestTimeoutMs: 120_000,
    });
    return new FleeceSource(client, opts);
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

  async *extents(): AsyncIterable<SourceExtent> {
    const allocation = await this.client.allocationMap();
    let dirty: Awaited<ReturnType<NbdClient['dirtyMap']>> | undefined;
    if (this.opts.bitmap) {
      dirty = await this.client.dirtyMap(this.opts.bitmap);
      this.dirtyBytes = dirty.filter((e) => e.data).reduce((s, e) => s + e.length, 0);
    }
    const extents = composeExtents(this.size, this.opts.chunkSize, allocation, dirty);
    this.ahead.plan(extents, this.size);
    yield* extents;
  }

  readInto(buf: Buffer, offset: number): Promise<void> {
    return this.ahead.readInto(buf, offset);
  }

  close(): Promise<void> {
    return this.client.close();
  }
}
