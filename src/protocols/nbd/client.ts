/** NBD client: handshake, then many requests in flight on one connection, matched by cookie. */
import type { Socket } from 'node:net';
import type { BlockReader, Extent } from '../../core/block-reader.js';
import { VmvaultError } from '../../core/errors.js';
import type { ByteQueue } from './byte-queue.js';
import { type NbdTarget, openSocket, resolveTarget } from './connect.js';
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
  NBD_CMD_NAMES,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EIO,
  NBD_ESHUTDOWN,
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
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR_BIT,
  NBD_REPLY_TYPE_ERROR_OFFSET,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_REQUEST_MAGIC,
  NBD_REQUEST_SIZE,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_SIMPLE_REPLY_SIZE,
  NBD_STATE_DIRTY,
  NBD_STATE_ZERO,
  NBD_STRUCTURED_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_SIZE,
  QEMU_DIRTY_BITMAP_PREFIX,
} from './constants.js';
import { closedError, protocolError, serverReplyError } from './errors.js';
import {
  ClientHandshake,
  type NbdBlockSize,
  type NbdListedExport,
  type NbdNegotiated,
} from './handshake-client.js';
import { SocketReader } from './socket-reader.js';

/** Options of {@link NbdClient.connect}. */
export interface NbdClientOptions extends NbdTarget {
  /** Metadata contexts to select, e.g. `['base:allocation', 'qemu:dirty-bitmap:bk1']`. */
  metaContexts?: string[];
  /** Negotiate structured replies (default true; required for metadata contexts). */
  structuredReplies?: boolean;
  /** Deadline for connecting plus the whole handshake (default 10 s). */
  handshakeTimeoutMs?: number;
  /** Deadline for each request; 0 disables (default 60 s). */
  requestTimeoutMs?: number;
  /** Requests sent before waiting for replies; more are queued locally (default 64). */
  maxInFlight?: number;
}

/** One extent reported by NBD_CMD_BLOCK_STATUS; `flags` are the context's status bits. */
export interface NbdExtent {
  offset: number;
  length: number;
  flags: number;
}

/** Flags of write-like commands. */
export interface NbdWriteOptions {
  /** Force unit access: the reply comes after the data is on stable storage. */
  fua?: boolean;
}

/** Flags of NBD_CMD_WRITE_ZEROES. */
export interface NbdWriteZeroesOptions extends NbdWriteOptions {
  /** The server must allocate (not punch a hole). */
  noHole?: boolean;
  /** Fail fast with ENOTSUP (E_UNSUPPORTED) unless zeroing is cheaper than writing. */
  fastZero?: boolean;
}

interface Pending {
  cookie: number;
  cmd: number;
  offset: number;
  length: number;
  started: number;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  /** READ target. */
  buf?: Buffer;
  /** READ bytes covered by content chunks so far. */
  covered: number;
  /** READ content ranges `[start, end)`, to reject overlapping chunks (which could hide gaps). */
  ranges?: number[];
  error?: VmvaultError;
  /** BLOCK_STATUS results by context id. */
  extents?: Map<number, NbdExtent[]>;
  /** Timed out: the caller has been answered; the reply is parsed and dropped. */
  abandoned: boolean;
}

interface Queued {
  header: Buffer;
  data: Buffer | undefined;
  pending: Pending;
}

enum State {
  Header = 0,
  SimpleData = 1,
  ChunkBody = 2,
  ChunkData = 3,
}

/** Largest structured chunk payload other than OFFSET_DATA (2^20 extents of 8 bytes + id). */
const MAX_CHUNK_PAYLOAD = 8 * 1024 * 1024 + 4096;

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
  private readonly pending = new Map<number, Pending>();
  private readonly waiting: Queued[] = [];
  private readonly contextNames = new Map<number, string>();
  private readonly maxInFlight: number;
  private readonly requestTimeoutMs: number;
  private nextCookie = 1;
  private inFlight = 0;
  private failure: Error | null = null;
  private closing = false;
  private timer: NodeJS.Timeout | null = null;
  private closedPromise: Promise<void>;
  private idleWaiters: (() => void)[] = [];

  // parser state
  private state = State.Header;
  private cur: Pending | undefined;
  private chunkFlags = 0;
  private chunkType = 0;
  private chunkLength = 0;
  private dataLeft = 0;
  private dataPos = 0;

  private constructor(socket: Socket, queue: ByteQueue, n: NbdNegotiated, opts: NbdClientOptions) {
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
    this.maxInFlight = Math.max(1, opts.maxInFlight ?? 64);
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 60_000;
    this.closedPromise = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => {
      this.queue.push(chunk);
      this.parse();
    });
    socket.on('error', (err) => this.fail(closedError(`NBD connection error: ${err.message}`, err)));
    socket.on('close', () => this.fail(closedError('NBD server closed the connection')));
    if (queue.length) setImmediate(() => this.parse());
  }

  /** Connects, negotiates and enters the transmission phase. */
  static async connect(opts: NbdClientOptions): Promise<NbdClient> {
    const addr = resolveTarget(opts);
    const timeoutMs = opts.handshakeTimeoutMs ?? 10_000;
    const deadline = Date.now() + timeoutMs;
    const socket = await openSocket(addr, timeoutMs);
    const reader = new SocketReader(socket);
    const timer = setTimeout(
      () => {
        reader.fail(new VmvaultError('E_TIMEOUT', `NBD handshake timed out after ${timeoutMs} ms`));
        socket.destroy();
      },
      Math.max(1, deadline - Date.now()),
    );
    try {
      const hs = new ClientHandshake(socket, reader);
      await hs.start();
      const wantSR = opts.structuredReplies ?? true;
      const contexts = opts.metaContexts ?? [];
      if (wantSR || contexts.length) await hs.structuredReply();
      let meta = new Map<string, number>();
      if (contexts.length) {
        if (!hs.structuredReplies) {
          throw new VmvaultError(
            'E_UNSUPPORTED',
            'NBD server does not support structured replies (block status)',
          );
        }
        meta = await hs.metaContext(addr.exportName, contexts);
      }
      const n = await hs.go(addr.exportName);
      clearTimeout(timer);
      const queue = reader.detach();
      return new NbdClient(socket, queue, { ...n, metaContexts: meta }, opts);
    } catch (err) {
      clearTimeout(timer);
      reader.detach();
      socket.destroy();
      throw err;
    }
  }

  /** NBD_OPT_LIST: names and descriptions of the server's exports. */
  static async list(opts: NbdTarget & { handshakeTimeoutMs?: number }): Promise<NbdListedExport[]> {
    return NbdClient.withHandshake(opts, async (hs) => hs.list());
  }

  /** NBD_OPT_LIST_META_CONTEXT: contexts available on an export (all when `queries` is empty). */
  static async listMetaContexts(
    opts: NbdTarget & { handshakeTimeoutMs?: number },
    queries: string[] = [],
  ): Promise<string[]> {
    const addr = resolveTarget(opts);
    return NbdClient.withHandshake(opts, async (hs) => {
      if (!(await hs.structuredReply())) {
        throw new VmvaultError('E_UNSUPPORTED', 'NBD server does not support structured replies');
      }
      return [...(await hs.metaContext(addr.exportName, queries, true)).keys()];
    });
  }

  private static async withHandshake<T>(
    opts: NbdTarget & { handshakeTimeoutMs?: number },
    fn: (hs: ClientHandshake) => Promise<T>,
  ): Promise<T> {
    const addr = resolveTarget(opts);
    const timeoutMs = opts.handshakeTimeoutMs ?? 10_000;
    const socket = await openSocket(addr, timeoutMs);
    const reader = new SocketReader(socket);
    const timer = setTimeout(() => {
      reader.fail(new VmvaultError('E_TIMEOUT', `NBD handshake timed out after ${timeoutMs} ms`));
      socket.destroy();
    }, timeoutMs);
    try {
      const hs = new ClientHandshake(socket, reader);
      await hs.start();
      const out = await fn(hs);
      await hs.abort();
      return out;
    } finally {
      clearTimeout(timer);
      reader.detach();
      socket.destroy();
    }
  }

  // -------------------------------------------------------------------------------------------
  // Capabilities

  get readOnly(): boolean {
    return (this.flags & NBD_FLAG_READ_ONLY) !== 0;
  }
  get canMultiConn(): boolean {
    return (this.flags & NBD_FLAG_CAN_MULTI_CONN) !== 0;
  }
  get canFlush(): boolean {
    return (this.flags & NBD_FLAG_SEND_FLUSH) !== 0;
  }
  get canFua(): boolean {
    return (this.flags & NBD_FLAG_SEND_FUA) !== 0;
  }
  get canTrim(): boolean {
    return (this.flags & NBD_FLAG_SEND_TRIM) !== 0;
  }
  get canWriteZeroes(): boolean {
    return (this.flags & NBD_FLAG_SEND_WRITE_ZEROES) !== 0;
  }
  get canFastZero(): boolean {
    return (this.flags & NBD_FLAG_SEND_FAST_ZERO) !== 0;
  }
  get canCache(): boolean {
    return (this.flags & NBD_FLAG_SEND_CACHE) !== 0;
  }
  get canDf(): boolean {
    return (this.flags & NBD_FLAG_SEND_DF) !== 0;
  }
  /** Requests currently sent and not yet answered. */
  get inFlightCount(): number {
    return this.inFlight;
  }
  /** True once the connection failed or was closed. */
  get closed(): boolean {
    return this.failure !== null;
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
    const end = offset + length;
    const result = new Map<string, NbdExtent[]>(names.map((n) => [n, []]));
    const cursor = new Map<string, number>(names.map((n) => [n, offset]));
    for (;;) {
      let pos = end;
      for (const c of cursor.values()) pos = Math.min(pos, c);
      if (pos >= end) break;
      const reply = await this.blockStatus(pos, Math.min(end - pos, 0x40000000));
      for (const name of names) {
        const exts = reply.get(name);
        if (!exts) throw protocolError(`block status reply lacks context '${name}'`);
        let at = cursor.get(name)!;
        const list = result.get(name)!;
        for (const e of exts) {
          const s = Math.max(e.offset, at);
          const t = Math.min(e.offset + e.length, end);
          if (t <= s) continue;
          const last = list[list.length - 1];
          if (last && last.flags === e.flags && last.offset + last.length === s) last.length += t - s;
          else list.push({ offset: s, length: t - s, flags: e.flags });
          at = t;
        }
        cursor.set(name, at);
      }
    }
    return result;
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
    if (!this.failure && !this.closing) {
      this.closing = true;
      if (this.inFlight > 0 || this.waiting.length > 0) {
        await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
      }
      if (!this.failure) {
        const h = Buffer.alloc(NBD_REQUEST_SIZE);
        h.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
        h.writeUInt16BE(NBD_CMD_DISC, 6);
        this.socket.end(h);
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

  private send(
    cmd: number,
    flags: number,
    offset: number,
    length: number,
    data?: Buffer,
    buf?: Buffer,
  ): Promise<unknown> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closing) return Promise.reject(closedError('NBD client is closing'));
    return new Promise((resolve, reject) => {
      const cookie = this.nextCookie;
      this.nextCookie = this.nextCookie >= 0xffffffff ? 1 : this.nextCookie + 1;
      const pending: Pending = {
        cookie,
        cmd,
        offset,
        length,
        started: 0,
        resolve,
        reject,
        covered: 0,
        abandoned: false,
      };
      if (buf) pending.buf = buf;
      const header = Buffer.allocUnsafe(NBD_REQUEST_SIZE);
      header.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
      header.writeUInt16BE(flags, 4);
      header.writeUInt16BE(cmd, 6);
      header.writeUInt32BE(0, 8);
      header.writeUInt32BE(cookie, 12);
      header.writeUInt32BE(Math.floor(offset / 0x100000000), 16);
      header.writeUInt32BE(offset >>> 0, 20);
      header.writeUInt32BE(length, 24);
      const q: Queued = { header, data, pending };
      if (this.inFlight < this.maxInFlight) this.transmit(q);
      else this.waiting.push(q);
    });
  }

  private transmit(q: Queued): void {
    const p = q.pending;
    p.started = Date.now();
    this.pending.set(p.cookie, p);
    this.inFlight++;
    if (q.data) {
      this.socket.cork();
      this.socket.write(q.header);
      this.socket.write(q.data);
      process.nextTick(uncork, this.socket);
    } else {
      this.socket.write(q.header);
    }
    if (this.requestTimeoutMs > 0 && !this.timer) {
      this.timer = setInterval(() => this.sweep(), Math.max(50, Math.min(1000, this.requestTimeoutMs / 4)));
      this.timer.unref();
    }
  }

  private sweep(): void {
    const now = Date.now();
    for (const p of this.pending.values()) {
      if (!p.abandoned && now - p.started > this.requestTimeoutMs) {
        p.abandoned = true;
        p.reject(
          new VmvaultError(
            'E_TIMEOUT',
            `NBD ${NBD_CMD_NAMES[p.cmd]} at offset ${p.offset} timed out after ${this.requestTimeoutMs} ms`,
          ),
        );
      }
    }
    if (this.pending.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  private finish(p: Pending, err: Error | null, value?: unknown): void {
    this.pending.delete(p.cookie);
    this.inFlight--;
    if (!p.abandoned) {
      if (err) p.reject(err);
      else p.resolve(value);
    }
    const next = this.waiting.shift();
    if (next && !this.failure) this.transmit(next);
    else if (this.inFlight === 0 && this.idleWaiters.length) this.wakeIdle();
  }

  private wakeIdle(): void {
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const f of w) f();
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const p of this.pending.values()) if (!p.abandoned) p.reject(err);
    for (const q of this.waiting) q.pending.reject(err);
    this.pending.clear();
    this.waiting.length = 0;
    this.queue.clear();
    this.wakeIdle();
  }

  /** A peer protocol violation: hard disconnect and fail everything with E_PROTOCOL. */
  private violation(message: string, details: Record<string, unknown> = {}): void {
    this.fail(protocolError(message, details));
    this.socket.destroy();
  }

  private lookup(cookieHi: number, cookie: number): Pending | undefined {
    const p = cookieHi === 0 ? this.pending.get(cookie) : undefined;
    if (!p) this.violation(`reply with unknown cookie ${cookieHi ? `${cookieHi}:` : ''}${cookie}`);
    return p;
  }

  private parse(): void {
    const q = this.queue;
    while (!this.failure) {
      switch (this.state) {
        case State.Header: {
          if (q.length < 4) return;
          const magic = q.peekUInt32(0);
          if (magic === NBD_SIMPLE_REPLY_MAGIC) {
            if (q.length < NBD_SIMPLE_REPLY_SIZE) return;
            const h = q.take(NBD_SIMPLE_REPLY_SIZE);
            const errv = h.readUInt32BE(4);
            const p = this.lookup(h.readUInt32BE(8), h.readUInt32BE(12));
            if (!p) return;
            if (p.cmd === NBD_CMD_READ && errv === 0) {
              if (this.structuredReplies) {
                this.violation('simple reply with data to READ after structured replies');
                return;
              }
              this.cur = p;
              this.dataLeft = p.length;
              this.dataPos = 0;
              this.state = State.SimpleData;
              continue;
            }
            if (p.cmd === NBD_CMD_BLOCK_STATUS && errv === 0) {
              this.violation('simple reply to BLOCK_STATUS');
              return;
            }
            this.complete(p, errv);
            continue;
          }
          if (magic === NBD_STRUCTURED_REPLY_MAGIC) {
            if (!this.structuredReplies) {
              this.violation('structured reply without negotiation');
              return;
            }
            if (q.length < NBD_STRUCTURED_REPLY_SIZE) return;
            const h = q.take(NBD_STRUCTURED_REPLY_SIZE);
            this.chunkFlags = h.readUInt16BE(4);
            this.chunkType = h.readUInt16BE(6);
            this.chunkLength = h.readUInt32BE(16);
            const p = this.lookup(h.readUInt32BE(8), h.readUInt32BE(12));
            if (!p) return;
            this.cur = p;
            if (this.chunkType === NBD_REPLY_TYPE_OFFSET_DATA) {
              if (p.cmd !== NBD_CMD_READ) {
                this.violation('OFFSET_DATA chunk for a non-READ request');
                return;
              }
              if (this.chunkLength < 9 || this.chunkLength - 8 > p.length) {
                this.violation(`OFFSET_DATA chunk of bad length ${this.chunkLength}`);
                return;
              }
            } else if (this.chunkLength > MAX_CHUNK_PAYLOAD) {
              this.violation(`structured reply chunk of ${this.chunkLength} bytes is too large`);
              return;
            }
            this.state = State.ChunkBody;
            continue;
          }
          this.violation(`bad reply magic 0x${magic.toString(16)}`);
          return;
        }
        case State.SimpleData: {
          const p = this.cur!;
          const n = Math.min(q.length, this.dataLeft);
          if (n === 0) return;
          q.copyTo(p.buf!, this.dataPos, n);
          this.dataPos += n;
          this.dataLeft -= n;
          if (this.dataLeft === 0) {
            this.state = State.Header;
            this.complete(p, 0);
          }
          continue;
        }
        case State.ChunkBody: {
          const p = this.cur!;
          if (this.chunkType === NBD_REPLY_TYPE_OFFSET_DATA) {
            if (q.length < 8) return;
            const h = q.take(8);
            const off = h.readUInt32BE(0) * 0x100000000 + h.readUInt32BE(4);
            const n = this.chunkLength - 8;
            if (off < p.offset || off + n > p.offset + p.length) {
              this.violation(`OFFSET_DATA at ${off}+${n} outside the request ${p.offset}+${p.length}`);
              return;
            }
            this.dataPos = off - p.offset;
            this.dataLeft = n;
            p.covered += n;
            addRange(p, off, off + n);
            this.state = State.ChunkData;
            continue;
          }
          if (q.length < this.chunkLength) return;
          const body = q.take(this.chunkLength);
          this.state = State.Header;
          if (!this.onChunk(p, body)) return;
          continue;
        }
        case State.ChunkData: {
          const p = this.cur!;
          const n = Math.min(q.length, this.dataLeft);
          if (n === 0) return;
          q.copyTo(p.buf!, this.dataPos, n);
          this.dataPos += n;
          this.dataLeft -= n;
          if (this.dataLeft === 0) {
            this.state = State.Header;
            if (this.chunkFlags & NBD_REPLY_FLAG_DONE) this.completeStructured(p);
          }
          continue;
        }
      }
    }
  }

  /** Handles a fully received non-data chunk. Returns false after a violation. */
  private onChunk(p: Pending, body: Buffer): boolean {
    const type = this.chunkType;
    const done = (this.chunkFlags & NBD_REPLY_FLAG_DONE) !== 0;
    if (type & NBD_REPLY_TYPE_ERROR_BIT) {
      if (body.length < 6) {
        this.violation('error chunk shorter than 6 bytes');
        return false;
      }
      const errv = body.readUInt32BE(0);
      const mlen = body.readUInt16BE(4);
      const fixed = type === NBD_REPLY_TYPE_ERROR_OFFSET ? 14 : 6;
      if (mlen > body.length - fixed) {
        this.violation('error chunk message overruns the chunk');
        return false;
      }
      const msg = body.toString('utf8', 6, 6 + mlen);
      if (!p.error) p.error = serverReplyError(errv || NBD_EIO, p.cmd, p.offset, p.length, msg || undefined);
    } else if (type === NBD_REPLY_TYPE_NONE) {
      if (body.length !== 0 || !done) {
        this.violation('NONE chunk with payload or without DONE');
        return false;
      }
    } else if (type === NBD_REPLY_TYPE_OFFSET_HOLE) {
      if (p.cmd !== NBD_CMD_READ || body.length !== 12) {
        this.violation('bad OFFSET_HOLE chunk');
        return false;
      }
      const off = body.readUInt32BE(0) * 0x100000000 + body.readUInt32BE(4);
      const n = body.readUInt32BE(8);
      if (n === 0 || off < p.offset || off + n > p.offset + p.length) {
        this.violation(`OFFSET_HOLE at ${off}+${n} outside the request ${p.offset}+${p.length}`);
        return false;
      }
      p.buf!.fill(0, off - p.offset, off - p.offset + n);
      p.covered += n;
      addRange(p, off, off + n);
    } else if (type === NBD_REPLY_TYPE_BLOCK_STATUS) {
      if (p.cmd !== NBD_CMD_BLOCK_STATUS || body.length < 12 || (body.length - 4) % 8 !== 0) {
        this.violation('bad BLOCK_STATUS chunk');
        return false;
      }
      const id = body.readUInt32BE(0);
      if (!this.contextNames.has(id)) {
        this.violation(`BLOCK_STATUS chunk for unknown context id ${id}`);
        return false;
      }
      p.extents ??= new Map();
      if (p.extents.has(id)) {
        this.violation(`two BLOCK_STATUS chunks for context id ${id}`);
        return false;
      }
      const list: NbdExtent[] = [];
      let at = p.offset;
      for (let i = 4; i < body.length; i += 8) {
        const len = body.readUInt32BE(i);
        if (len === 0) {
          this.violation('BLOCK_STATUS extent of length 0');
          return false;
        }
        list.push({ offset: at, length: len, flags: body.readUInt32BE(i + 4) });
        at += len;
      }
      p.extents.set(id, list);
    } else {
      this.violation(`unknown structured reply chunk type ${type}`);
      return false;
    }
    if (done) this.completeStructured(p);
    return true;
  }

  private completeStructured(p: Pending): void {
    if (p.error) {
      this.finish(p, p.error);
      return;
    }
    if (p.cmd === NBD_CMD_READ && (p.covered !== p.length || overlaps(p.ranges))) {
      this.violation(`READ reply chunks cover ${p.covered} of ${p.length} bytes or overlap`);
      return;
    }
    if (p.cmd === NBD_CMD_BLOCK_STATUS) {
      if (!p.extents || p.extents.size !== this.contextNames.size) {
        this.violation('BLOCK_STATUS reply lacks a chunk for a selected context');
        return;
      }
      this.finish(p, null, p.extents);
      return;
    }
    this.finish(p, null);
  }

  private complete(p: Pending, errv: number): void {
    if (errv) {
      const e = serverReplyError(errv, p.cmd, p.offset, p.length);
      this.finish(p, e);
      if (errv === NBD_ESHUTDOWN) void this.close();
      return;
    }
    this.finish(p, null);
  }
}

function addRange(p: Pending, start: number, end: number): void {
  if (p.ranges) p.ranges.push(start, end);
  else p.ranges = [start, end];
}

/** True when any two `[start, end)` pairs in the flat list overlap. */
function overlaps(ranges: number[] | undefined): boolean {
  if (!ranges || ranges.length <= 2) return false;
  const pairs: [number, number][] = [];
  for (let i = 0; i < ranges.length; i += 2) pairs.push([ranges[i]!, ranges[i + 1]!]);
  pairs.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < pairs.length; i++) if (pairs[i]![0] < pairs[i - 1]![1]) return true;
  return false;
}

function uncork(s: Socket): void {
  s.uncork();
}

function toExtents(list: NbdExtent[], isData: (flags: number) => boolean): Extent[] {
  const out: Extent[] = [];
  for (const e of list) {
    const data = isData(e.flags);
    const last = out[out.length - 1];
    if (last && last.data === data) last.length += e.length;
    else out.push({ offset: e.offset, length: e.length, data });
  }
  return out;
}
