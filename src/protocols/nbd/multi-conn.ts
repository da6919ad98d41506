/** Several connections to one export, used when the server advertises NBD_FLAG_CAN_MULTI_CONN. */
import type { BlockReader, Extent } from '../../core/block-reader.js';
import {
  NbdClient,
  type NbdClientOptions,
  type NbdWriteOptions,
  type NbdWriteZeroesOptions,
} from './client.js';

/** Options of {@link NbdMultiClient.connect}. */
export interface NbdMultiClientOptions extends NbdClientOptions {
  /** Connections to open when the server allows it (default 4). */
  connections?: number;
}

/**
 * A small pool of {@link NbdClient}s to one export. Opens one connection, and more only when
 * the server advertises CAN_MULTI_CONN (so a flush on any connection covers writes made on all).
 * Each request goes to the connection with the fewest requests in flight; large reads and
 * writes are split into `maxRequest` pieces spread across connections.
 */
export class NbdMultiClient implements BlockReader {
  private constructor(readonly clients: readonly NbdClient[]) {}

  /** Connects the first client, then the others in parallel when multi-conn is allowed. */
  static async connect(opts: NbdMultiClientOptions): Promise<NbdMultiClient> {
    const first = await NbdClient.connect(opts);
    const want = Math.max(1, opts.connections ?? 4);
    if (want === 1 || !first.canMultiConn) return new NbdMultiClient([first]);
    const rest = await Promise.allSettled(Array.from({ length: want - 1 }, () => NbdClient.connect(opts)));
    const ok = rest.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const failed = rest.find((r) => r.status === 'rejected');
    if (failed) {
      await Promise.allSettled([first, ...ok].map((c) => c.close()));
      throw (failed as PromiseRejectedResult).reason;
    }
    return new NbdMultiClient([first, ...ok]);
  }

  /** The first connection (for capabilities: size, flags, contexts). */
  get primary(): NbdClient {
    return this.clients[0]!;
  }

  get size(): number {
    return this.primary.size;
  }

  private pick(): NbdClient {
    let best = this.clients[0]!;
    for (const c of this.clients) if (c.inFlightCount < best.inFlightCount) best = c;
    return best;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(length);
    await this.readInto(offset, out);
    return out;
  }

  async readInto(offset: number, target: Buffer): Promise<void> {
    const step = this.primary.maxRequest;
    const parts: Promise<void>[] = [];
    for (let done = 0; done < target.length; done += step) {
      const n = Math.min(step, target.length - done);
      parts.push(this.pick().readInto(offset + done, target.subarray(done, done + n)));
    }
    await Promise.all(parts);
  }

  async write(offset: number, data: Buffer, opts: NbdWriteOptions = {}): Promise<void> {
    const step = this.primary.maxRequest;
    const parts: Promise<void>[] = [];
    for (let done = 0; done < data.length; done += step) {
      const n = Math.min(step, data.length - done);
      parts.push(this.pick().write(offset + done, data.subarray(done, done + n), opts));
    }
    await Promise.all(parts);
  }

  writeZeroes(offset: number, length: number, opts?: NbdWriteZeroesOptions): Promise<void> {
    return this.pick().writeZeroes(offset, length, opts);
  }

  trim(offset: number, length: number, opts?: NbdWriteOptions): Promise<void> {
    return this.pick().trim(offset, length, opts);
  }

  /** Flushes; with multi-conn one connection's flush covers all completed writes. */
  flush(): Promise<void> {
    return this.pick().flush();
  }

  allocationMap(offset?: number, length?: number): Promise<Extent[]> {
    return this.primary.allocationMap(offset, length);
  }

  dirtyMap(bitmap: string, offset?: number, length?: number): Promise<Extent[]> {
    return this.primary.dirtyMap(bitmap, offset, length);
  }

  /** Closes every connection. */
  async close(): Promise<void> {
    await Promise.allSettled(this.clients.map((c) => c.close()));
  }
}
