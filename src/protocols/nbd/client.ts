/**
 * `NbdClient`: one connection to an NBD export in the transmission phase. Commands, splitting,
 * capability checks and block status; requests are tracked in `client-requests.ts`, replies
 * parsed in `client-replies.ts`, the handshake run by `client-negotiate.ts`.
 */
import type { Socket } from 'node:net';
import type { BlockReader, Extent } from '../../core/block-reader.js';
import { VmvaultError } from '../../core/errors.js';
import type { ByteQueue } from './byte-queue.js';
import type { SocketInput } from './socket-input.js';
import { collectBlockStatus, toExtents } from './client-block-status.js';
import { negotiate, withHandshake } from './client-negotiate.js';
import { ReplyParser } from './client-replies.js';
import { RequestTracker, encodeRequest } from './client-requests.js';
import type { NbdClientOptions, NbdExtent, NbdWriteOptions, NbdWriteZeroesOptions } from './client-types.js';
import { type NbdTarget, resolveTarget } from './connect.js';
import {
  BASE_ALLOCATION,
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_CACHE,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FAST_ZERO,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_MAX_PAYLOAD,
  NBD_STATE_DIRTY,
  NBD_STATE_ZERO,
  QEMU_DIRTY_BITMAP_PREFIX,
} from './constants.js';
import { closedError, protocolError } from './errors.js';
import type { NbdBlockSize, NbdListedExport, NbdNegotiated } from './handshake-client.js';

export type { NbdClientOptions, NbdExtent, NbdWriteOptions, NbdWriteZeroesOptions } from './client-types.js';

/**
 * A connection to one NBD export. Create with {@link NbdClient.connect}; all methods may be called
 * concurrently. Implements {@link BlockReader}.
 */
export class NbdClient implements BlockReader {
  /** Export size in bytes. */
  readonly size: number;
  /** Export name as the server knows it. */
  readonly exportName: string;
  /** Transmission flags (`NBD_FLAG_*`). */
  readonly flags: number;
  /** Block size constraints (defaults when the server advertised none). */
  readonly blockSize: NbdBlockSize;
  /** Whether structured replies are in use. */
  readonly structuredReplies: boolean;
  /** Selected metadata contexts: name → id. */
  readonly metaContexts: ReadonlyMap<string, number>;
  /** Export description, if the server sent one. */
  readonly description: string | undefined;
  /** Largest READ/WRITE length this client sends in one request (larger calls are split). */
  readonly maxRequest: number;

  private readonly socket: Socket;
  private readonly queue: ByteQueue;
  private readonly requests: RequestTracker;
  private readonly parser: ReplyParser;
  private readonly contextNames = new Map<number, string>();
  private closing = false;
  private closedPromise: Promise<void>;

  private constructor(
    socket: Socket,
    queue: ByteQueue,
    input: SocketInput,
    n: NbdNegotiated,
    opts: NbdClientOptions,
  ) {
    this.socket = socket;
    this.queue = queue;
    this.size = n.size;
    this.exportName = n.exportName;
    this.flags = n.flags;
    this.blockSize = n.blockSize;
    this.structuredReplies = n.structuredReplies;
    this.metaContexts = n.metaContexts;
    this.description = n.description;
    for (const [name, id] of n.metaContexts) this.contextNames.set(id, name);
    const max = Math.min(n.blockSize.maximum, NBD_MAX_PAYLOAD);
    this.maxRequest = Math.max(n.blockSize.minimum, max - (max % n.blockSize.minimum));
    this.requests = new RequestTracker(
      socket,
      Math.max(1, opts.maxInFlight ?? 64),
      opts.requestTimeoutMs ?? 60_000,
    );
    this.parser = new ReplyParser(queue, {
      requests: this.requests,
      structuredReplies: this.structuredReplies,
      contextNames: this.contextNames,
      violation: (message) => this.violation(message),
      shutdown: () => void this.close(),
    });
    this.closedPromise = new Promise((resolve) => socket.once('close', () => resolve()));
    const parser = this.parser;
    input.attach({
      directTarget: () => parser.directTarget(),
      filled: (n) => parser.filled(n),
      received: (chunk) => {
        queue.push(chunk);
        parser.parse();
        queue.unalias(chunk.buffer);
      },
    });
    socket.on('error', (err) => this.fail(closedError(`NBD connection error: ${err.message}`, err)));
    socket.on('close', () => this.fail(closedError('NBD server closed the connection')));
    if (queue.length) setImmediate(() => this.parser.parse());
  }

  /** Connects, negotiates and enters the transmission phase. */
  static async connect(opts: NbdClientOptions): Promise<NbdClient> {
    const { socket, queue, input, negotiated } = await negotiate(opts);
    return new NbdClient(socket, queue, input, negotiated, opts);
  }

  /** NBD_OPT_LIST: names and descriptions of the server's exports. */
  static async list(opts: NbdTarget & { handshakeTimeoutMs?: number }): Promise<NbdListedExport[]> {
    return withHandshake(opts, async (hs) => hs.list());
  }

  /** NBD_OPT_LIST_META_CONTEXT: contexts available on an export (all when `queries` is empty). */
  static async listMetaContexts(
    opts: NbdTarget & { handshakeTimeoutMs?: number },
    queries: string[] = [],
  ): Promise<string[]> {
    const addr = resolveTarget(opts);
    return withHandshake(opts, async (hs) => {
      if (!(await hs.structuredReply())) {
        throw new VmvaultError('E_UNSUPPORTED', 'NBD server does not support structured replies');
      }
      return [...(await hs.metaContext(addr.exportName, queries, true)).keys()];
    });
  }

  // -------------------------------------------------------------------------------------------
  // Capabilities

  get readOnly(): boolean {
    return this.hasFlag(NBD_FLAG_READ_ONLY);
  }
  get canMultiConn(): boolean {
    return this.hasFlag(NBD_FLAG_CAN_MULTI_CONN);
  }
  get canFlush(): boolean {
    return this.hasFlag(NBD_FLAG_SEND_FLUSH);
  }
  get canFua(): boolean {
    return this.hasFlag(NBD_FLAG_SEND_FUA);
  }
  get canTrim(): boolean {
    return this.hasFlag(NBD_FLAG_SEND_TRIM);
  }
  get canWriteZeroes(): boolean {
    return this.hasFlag(NBD_FLAG_SEND_WRITE_ZEROES);
  }
  get canFastZero(): boolean {
    return this.hasFlag(NBD_FLAG_SEND_FAST_ZERO);
  }
  get canCache(): boolean {
    return this.hasFlag(NBD_FLAG_SEND_CACHE);
  }
  get canDf(): boolean {
    return this.hasFlag(NBD_FLAG_SEND_DF);
  }
  /** Requests currently sent and not yet answered. */
  get inFlightCount(): number {
    return this.requests.inFlightCount;
  }
  /** True once the connection failed or was closed. */
  get closed(): boolean {
    return this.requests.failure !== null;
  }

  // -------------------------------------------------------------------------------------------
  // Commands

  /** Reads `length` bytes at `offset`; requests above {@link maxRequest} are split. */
  async read(offset: number, length: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(length);
    await this.readInto(offset, out);
    return out;
  }

  /** Reads `target.length` bytes at `offset` into `target`. */
  async readInto(offset: number, target: Buffer): Promise<void> {
    this.checkRange('read', offset, target.length);
    if (target.length <= this.maxRequest) {
      if (target.length) await this.send(NBD_CMD_READ, 0, offset, target.length, undefined, target);
      return;
    }
    const parts: Promise<unknown>[] = [];
    for (let done = 0; done < target.length; done += this.maxRequest) {
      const n = Math.min(this.maxRequest, target.length - done);
      parts.push(this.send(NBD_CMD_READ, 0, offset + done, n, undefined, target.subarray(done, done + n)));
    }
    await Promise.all(parts);
  }

  /** Reads with NBD_CMD_FLAG_DF (one content chunk); length must not exceed {@link maxRequest}. */
  async readUnfragmented(offset: number, length: number): Promise<Buffer> {
    this.checkRange('read', offset, length);
    if (!this.canDf) throw new VmvaultError('E_UNSUPPORTED', 'NBD server does not support NBD_CMD_FLAG_DF');
    const out = Buffer.allocUnsafe(length);
    await this.send(NBD_CMD_READ, NBD_CMD_FLAG_DF, offset, length, undefined, out);
    return out;
  }

  /** Writes `data` at `offset`; larger than {@link maxRequest} is split. */
  async write(offset: number, data: Buffer, opts: NbdWriteOptions = {}): Promise<void> {
    this.checkRange('write', offset, data.length);
    this.checkWritable();
    const flags = this.fuaFlag(opts);
    const parts: Promise<unknown>[] = [];
    for (let done = 0; done < data.length; done += this.maxRequest) {
      const n = Math.min(this.maxRequest, data.length - done);
      parts.push(this.send(NBD_CMD_WRITE, flags, offset + done, n, data.subarray(done, done + n)));
    }
    await Promise.all(parts);
  }

  /** NBD_CMD_FLUSH: everything written and acknowledged so far reaches stable storage. */
  async flush(): Promise<void> {
    if (!this.canFlush) return;
    await this.send(NBD_CMD_FLUSH, 0, 0, 0);
  }

  /** NBD_CMD_TRIM (a hint: the range's contents become undefined). */
  async trim(offset: number, length: number, opts: NbdWriteOptions = {}): Promise<void> {
    this.checkRange('trim', offset, length);
    this.checkWritable();
    if (!this.canTrim) throw new VmvaultError('E_UNSUPPORTED', 'NBD server does not support TRIM');
    await this.eachRange(offset, length, 0x80000000, (o, n) =>
      this.send(NBD_CMD_TRIM, this.fuaFlag(opts), o, n),
    );
  }

  /** NBD_CMD_WRITE_ZEROES. */
  async writeZeroes(offset: number, length: number, opts: NbdWriteZeroesOptions = {}): Promise<void> {
    this.checkRange('write zeroes', offset, length);
    this.checkWritable();
    if (!this.canWriteZeroes)
      throw new VmvaultError('E_UNSUPPORTED', 'NBD server does not support WRITE_ZEROES');
    let flags = this.fuaFlag(opts) | (opts.noHole ? NBD_CMD_FLAG_NO_HOLE : 0);
    if (opts.fastZero) {
      if (!this.canFastZero) throw new VmvaultError('E_UNSUPPORTED', 'NBD server does not support FAST_ZERO');
      flags |= NBD_CMD_FLAG_FAST_ZERO;
    }
    // The maximum block size applies to WRITE_ZEROES too (except with FAST_ZERO); stay within it.
    const step = opts.fastZero
      ? 0x80000000
      : Math.max(this.maxRequest, Math.min(this.blockSize.maximum, 0x80000000));
    await this.eachRange(offset, length, step, (o, n) => this.send(NBD_CMD_WRITE_ZEROES, flags, o, n));
  }

  /** NBD_CMD_CACHE: a hint to prefetch the range. */
  async cache(offset: number, length: number): Promise<void> {
    this.checkRange('cache', offset, length);
    if (!this.canCache) throw new VmvaultError('E_UNSUPPORTED', 'NBD server does not support CACHE');
    await this.eachRange(offset, length, this.maxRequest, (o, n) => this.send(NBD_CMD_CACHE, 0, o, n));
  }

  /**
   * One NBD_CMD_BLOCK_STATUS request. Returns, per selected context name, the extents the server
   * sent (contiguous from `offset`; they may cover less than asked, and the last may overrun).
   */
  async blockStatus(
    offset: number,
    length: number,
    opts: { reqOne?: boolean } = {},
  ): Promise<Map<string, NbdExtent[]>> {
    this.checkRange('block status', offset, length);
    if (this.metaContexts.size === 0) {
      throw new VmvaultError('E_UNSUPPORTED', 'no NBD metadata context was negotiated', {
        hint: "pass metaContexts: ['base:allocation'] when connecting",
      });
    }
    const n = Math.min(length, 0xffffffff - (0xffffffff % this.blockSize.minimum));
    const byId = (await this.send(
      NBD_CMD_BLOCK_STATUS,
      opts.reqOne ? NBD_CMD_FLAG_REQ_ONE : 0,
      offset,
      n,
    )) as Map<number, NbdExtent[]>;
    const out = new Map<string, NbdExtent[]>();
    for (const [id, ext] of byId) out.set(this.contextNames.get(id)!, ext);
    return out;
  }

  /**
   * Block status over a whole range, looping as needed: per context, contiguous extents covering
   * exactly `[offset, offset + length)` (overruns clamped, adjacent equal flags merged).
   */
  async blockStatusRange(
    offset: number,
    length: number,
    contexts?: string[],
  ): Promise<Map<string, NbdExtent[]>> {
    this.checkRange('block status', offset, length);
    const names = contexts ?? [...this.metaContexts.keys()];
    for (const name of names) {
      if (!this.metaContexts.has(name)) {
        throw new VmvaultError('E_UNSUPPORTED', `NBD metadata context '${name}' was not negotiated`, {
          hint: 'the server may not offer it (for a dirty bitmap: check the bitmap name and export)',
        });
      }
    }
    return collectBlockStatus((o, n) => this.blockStatus(o, n), offset, length, names);
  }

  /** `base:allocation` over a range as shared {@link Extent}s (`data: false` = reads as zeros). */
  async allocationMap(offset = 0, length = this.size - offset): Promise<Extent[]> {
    const m = await this.blockStatusRange(offset, length, [BASE_ALLOCATION]);
    return toExtents(m.get(BASE_ALLOCATION)!, (f) => (f & NBD_STATE_ZERO) === 0);
  }

  /** `qemu:dirty-bitmap:NAME` over a range as {@link Extent}s (`data: true` = dirty). */
  async dirtyMap(bitmap: string, offset = 0, length = this.size - offset): Promise<Extent[]> {
    const ctx = QEMU_DIRTY_BITMAP_PREFIX + bitmap;
    const m = await this.blockStatusRange(offset, length, [ctx]);
    return toExtents(m.get(ctx)!, (f) => (f & NBD_STATE_DIRTY) !== 0);
  }

  /** Sends NBD_CMD_DISC after in-flight requests finish, then closes. Idempotent. */
  async close(): Promise<void> {
    if (!this.requests.failure && !this.closing) {
      this.closing = true;
      if (this.requests.busy) await this.requests.idle();
      if (!this.requests.failure) {
        this.socket.end(encodeRequest(NBD_CMD_DISC, 0, 0, 0, 0));
        const t = setTimeout(() => this.socket.destroy(), 2000);
        await this.closedPromise;
        clearTimeout(t);
      }
    }
    this.fail(closedError('NBD client closed'));
    this.socket.destroy();
    await this.closedPromise;
  }

  /** Drops the connection at once, failing every pending request with E_CLOSED. */
  destroy(): void {
    this.fail(closedError('NBD client destroyed'));
    this.socket.destroy();
  }

  // -------------------------------------------------------------------------------------------
  // Internals

  private hasFlag(flag: number): boolean {
    return (this.flags & flag) !== 0;
  }

  private fuaFlag(opts: NbdWriteOptions): number {
    if (!opts.fua) return 0;
    if (!this.canFua) throw new VmvaultError('E_UNSUPPORTED', 'NBD server does not support FUA');
    return NBD_CMD_FLAG_FUA;
  }

  private checkWritable(): void {
    if (this.readOnly)
      throw new VmvaultError('E_UNSUPPORTED', `NBD export '${this.exportName}' is read-only`);
  }

  private checkRange(what: string, offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new VmvaultError('E_USAGE', `NBD ${what}: invalid offset ${offset} or length ${length}`);
    }
    if (offset + length > this.size) {
      throw new VmvaultError(
        'E_USAGE',
        `NBD ${what} of ${length} bytes at ${offset} goes past the end of the ${this.size}-byte export`,
      );
    }
  }

  private async eachRange(
    offset: number,
    length: number,
    step: number,
    fn: (o: number, n: number) => Promise<unknown>,
  ): Promise<void> {
    const parts: Promise<unknown>[] = [];
    for (let done = 0; done < length; done += step)
      parts.push(fn(offset + done, Math.min(step, length - done)));
    await Promise.all(parts);
  }

  private send(...request: Parameters<RequestTracker['submit']>): Promise<unknown> {
    const failure = this.requests.failure;
    if (failure) return Promise.reject(failure);
    if (this.closing) return Promise.reject(closedError('NBD client is closing'));
    return this.requests.submit(...request);
  }

  private fail(err: Error): void {
    if (!this.requests.fail(err)) return;
    this.queue.clear();
    this.requests.wakeIdle();
  }

  /** A peer protocol violation: hard disconnect and fail everything with E_PROTOCOL. */
  private violation(message: string, details: Record<string, unknown> = {}): void {
    this.fail(protocolError(message, details));
    this.socket.destroy();
  }
}
