/**
 * A disk read over NBD: `nbd://host[:port]/export` or `nbd+unix:///export?socket=PATH`. Uses
 * several connections when the server advertises multi-conn, `base:allocation` block status so
 * that zero and unallocated ranges are never read, and splits each read into pieces spread over
 * the connections so several requests are in flight at once.
 */
import { type Extent, isVmvaultError, VmvaultError } from '../core/index.js';
import { BASE_ALLOCATION, NbdMultiClient, type NbdMultiClientOptions } from '../protocols/nbd/index.js';
import type { DiskSource } from './disk-source.js';

/** Bytes of each NBD read request the source sends (a 4 MiB segment becomes 4 requests). */
const PIECE = 1 << 20;
/** Range covered by one block-status walk; extents are yielded window by window. */
const STATUS_WINDOW = 1 << 30;

/** Options of {@link NbdSource.connect}. */
export interface NbdSourceOptions {
  /** Connections to open when the server allows multi-conn (default 4). */
  connections?: number;
  /** What to record as the source kind (default `nbd`). */
  kind?: string;
  /** Image format to record (default `raw`: what an NBD export presents). */
  format?: string;
  /** What to record as the path (default the URI). */
  path?: string;
  /** Called once after the connections are closed (e.g. to stop the server vmvault started). */
  onClose?: () => Promise<void>;
}

/** A {@link DiskSource} reading an NBD export. */
export class NbdSource implements DiskSource {
  readonly kind: string;
  readonly format: string;
  readonly path: string;
  readonly size: number;
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly client: NbdMultiClient,
    opts: NbdSourceOptions & { path: string },
  ) {
    this.kind = opts.kind ?? 'nbd';
    this.format = opts.format ?? 'raw';
    this.path = opts.path;
    this.size = client.size;
    this.onClose = opts.onClose;
  }

  private readonly onClose: (() => Promise<void>) | undefined;

  /**
   * Connects to the export at `uri` (or the target in `target`) asking for `base:allocation`.
   * Failures are `E_SOURCE` errors naming the URI.
   */
  static async connect(
    target: Pick<NbdMultiClientOptions, 'uri' | 'socketPath' | 'exportName'>,
    opts: NbdSourceOptions = {},
  ): Promise<NbdSource> {
    const where = opts.path ?? target.uri ?? target.socketPath ?? 'NBD server';
    let client: NbdMultiClient;
    try {
      client = await NbdMultiClient.connect({
        ...target,
        metaContexts: [BASE_ALLOCATION],
        connections: opts.connections ?? 4,
        requestTimeoutMs: 120_000,
      });
    } catch (err) {
      const why = isVmvaultError(err) ? err.message : (err as Error).message;
      throw new VmvaultError('E_SOURCE', `cannot read ${where}: ${why}`, {
        cause: err,
        hint:
          isVmvaultError(err) && err.code === 'E_USAGE'
            ? err.hint
            : 'check that the NBD server is running and the export exists',
      });
    }
    return new NbdSource(client, { ...opts, path: opts.path ?? target.uri ?? where });
  }

  /** Number of connections in use (more than one when the server allows multi-conn). */
  get connections(): number {
    return this.client.clients.length;
  }

  async *extents(): AsyncIterable<Extent> {
    if (this.size === 0) return;
    if (!this.client.primary.metaContexts.has(BASE_ALLOCATION)) {
      yield { offset: 0, length: this.size, data: true };
      return;
    }
    for (let pos = 0; pos < this.size; pos += STATUS_WINDOW) {
      const len = Math.min(STATUS_WINDOW, this.size - pos);
      let map: Extent[];
      try {
        map = await this.client.allocationMap(pos, len);
      } catch (err) {
        throw this.failed(`block status at ${pos}`, err);
      }
      yield* map;
    }
  }

  async readInto(buf: Buffer, offset: number): Promise<void> {
    const parts: Promise<void>[] = [];
    for (let done = 0; done < buf.length; done += PIECE) {
      const n = Math.min(PIECE, buf.length - done);
      parts.push(this.client.readInto(offset + done, buf.subarray(done, done + n)));
    }
    try {
      await Promise.all(parts);
    } catch (err) {
      await Promise.allSettled(parts);
      throw this.failed(`read of ${buf.length} bytes at ${offset}`, err);
    }
  }

  /** Closes the connections, then runs `onClose`. Safe to call more than once. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.client.close();
      await this.onClose?.();
    })();
    return this.closing;
  }

  private failed(what: string, err: unknown): VmvaultError {
    const why = (err as Error).message;
    return new VmvaultError('E_SOURCE', `${what} of ${this.path} failed: ${why}`, { cause: err });
  }
}
