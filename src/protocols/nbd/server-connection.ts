/** One client connection of {@link NbdServer}: handshake, then concurrent request processing. */
import type { Socket } from 'node:net';
import type { ByteQueue } from './byte-queue.js';
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
  NBD_EINVAL,
  NBD_ENOSPC,
  NBD_EPERM,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_CACHE,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_INIT_MAGIC,
  NBD_MAX_PAYLOAD,
  NBD_MAX_STRING,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_OPTS_MAGIC,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_SHUTDOWN,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_MAGIC,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_REQUEST_MAGIC,
  NBD_REQUEST_SIZE,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STATE_HOLE,
  NBD_STATE_ZERO,
  NBD_STRUCTURED_REPLY_MAGIC,
} from './constants.js';
import { errorToNbdErrno } from './errors.js';
import type { NbdExport, NbdExportBlockSize } from './export.js';
import { SocketReader } from './socket-reader.js';

/** Limits and timeouts of a server (all resolved, see NbdServerOptions). */
export interface ServerLimits {
  handshakeTimeoutMs: number;
  requestDataTimeoutMs: number;
  maxOptions: number;
  maxOptionLength: number;
  maxInFlight: number;
  maxInFlightBytes: number;
  maxWriteBuffer: number;
  maxExtentsPerReply: number;
}

/** What a connection needs from its server. */
export interface ServerContext {
  readonly limits: ServerLimits;
  readonly shuttingDown: boolean;
  lookup(name: string): { name: string; exp: NbdExport } | undefined;
  list(): { name: string; description: string }[];
  report(err: unknown, where: string): void;
}

interface Request {
  flags: number;
  type: number;
  cookie: Buffer;
  offset: number;
  length: number;
  payload?: Buffer;
}

const CONTEXT_ID_BASE = 0;
const ZERO_CHUNK = Buffer.alloc(1024 * 1024);

/** Thrown inside request handling to answer with a given NBD error value. */
class NbdReplyError extends Error {
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(message);
  }
}

function hardLimitBlockSize(b: NbdExportBlockSize | undefined): NbdExportBlockSize {
  const maximum = Math.min(b?.maximum ?? NBD_MAX_PAYLOAD, NBD_MAX_PAYLOAD);
  return { minimum: b?.minimum ?? 1, preferred: b?.preferred ?? 4096, maximum };
}

/** Handles one accepted socket from first byte to close. */
export class ServerConnection {
  private reader: SocketReader | null;
  private queue: ByteQueue | null = null;
  private exp: NbdExport | null = null;
  private exportName = '';
  private blockSize: NbdExportBlockSize = hardLimitBlockSize(undefined);
  private structured = false;
  private noZeroes = false;
  private metaExport: string | null = null;
  private baseAllocation = false;
  private transmission = false;
  private inFlight = 0;
  private inFlightBytes = 0;
  private pendingHeader: Request | null = null;
  private disconnecting = false;
  private paused = false;
  private partialTimer: NodeJS.Timeout | null = null;
  private handshakeTimer: NodeJS.Timeout | null = null;
  private idleWaiters: (() => void)[] = [];
  /** Resolves when the socket has closed. */
  readonly done: Promise<void>;

  constructor(
    private readonly socket: Socket,
    private readonly ctx: ServerContext,
  ) {
    this.done = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => {
      // Peer resets are routine; 'close' follows.
    });
    socket.once('close', () => this.onClose());
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 30_000);
    this.reader = new SocketReader(socket);
    this.handshakeTimer = setTimeout(() => {
      this.ctx.report(new Error('handshake timed out'), 'handshake');
      this.socket.destroy();
    }, ctx.limits.handshakeTimeoutMs);
    this.handshake().catch((err) => {
      if (!this.socket.destroyed) this.ctx.report(err, 'handshake');
      this.socket.destroy();
    });
  }

  /** Stops accepting requests; waits (up to `graceMs`) for in-flight ones, then closes. */
  async shutdown(graceMs: number): Promise<void> {
    this.disconnecting = true;
    if (!this.transmission) {
      this.socket.destroy();
      return this.done;
    }
    this.socket.pause();
    if (this.inFlight > 0) {
      await Promise.race([
        new Promise<void>((r) => this.idleWaiters.push(r)),
        new Promise<void>((r) => setTimeout(r, graceMs).unref()),
      ]);
    }
    this.socket.destroy();
    return this.done;
  }

  private onClose(): void {
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    if (this.partialTimer) clearTimeout(this.partialTimer);
    this.reader?.fail(new Error('closed'));
    this.queue?.clear();
    this.disconnecting = true;
  }

  // -------------------------------------------------------------------------------------------
  // Handshake

  private sendOptionReply(option: number, type: number, data?: Buffer): void {
    const h = Buffer.allocUnsafe(20);
    h.writeBigUInt64BE(NBD_REP_MAGIC, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(type >>> 0, 12);
    h.writeUInt32BE(data ? data.length : 0, 16);
    this.socket.write(data ? Buffer.concat([h, data]) : h);
  }

  private sendError(option: number, type: number, message: string): void {
    this.sendOptionReply(option, type, Buffer.from(message, 'utf8'));
  }

  private async handshake(): Promise<void> {
    const reader = this.reader!;
    const hello = Buffer.allocUnsafe(18);
    hello.writeBigUInt64BE(NBD_INIT_MAGIC, 0);
    hello.writeBigUInt64BE(NBD_OPTS_MAGIC, 8);
    hello.writeUInt16BE(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES, 16);
    this.socket.write(hello);
    const cflags = (await reader.read(4)).readUInt32BE(0);
    if (cflags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
      throw new Error(`unknown client flags 0x${cflags.toString(16)}`);
    }
    this.noZeroes = (cflags & NBD_FLAG_C_NO_ZEROES) !== 0;
    const limits = this.ctx.limits;
    for (let count = 0; ; count++) {
      if (count >= limits.maxOptions) throw new Error('too many options');
      const h = await reader.read(16);
      if (h.readBigUInt64BE(0) !== NBD_OPTS_MAGIC) throw new Error('bad option magic');
      const option = h.readUInt32BE(8);
      const len = h.readUInt32BE(12);
      if (len > limits.maxOptionLength) throw new Error(`option data of ${len} bytes is too large`);
      const data = len ? Buffer.from(await reader.read(len)) : Buffer.alloc(0);
      if (this.ctx.shuttingDown && option !== NBD_OPT_ABORT) {
        if (option === NBD_OPT_EXPORT_NAME) throw new Error('server shutting down');
        this.sendError(option, NBD_REP_ERR_SHUTDOWN, 'server is shutting down');
        continue;
      }
      switch (option) {
        case NBD_OPT_EXPORT_NAME: {
          const found = this.ctx.lookup(data.toString('utf8'));
          if (!found) throw new Error(`unknown export '${data.toString('utf8', 0, 256)}'`);
          this.select(found.name, found.exp);
          const r = Buffer.alloc(this.noZeroes ? 10 : 134);
          r.writeBigUInt64BE(BigInt(found.exp.size), 0);
          r.writeUInt16BE(this.transmissionFlags(), 8);
          this.socket.write(r);
          return this.enterTransmission();
        }
        case NBD_OPT_ABORT:
          this.sendOptionReply(option, NBD_REP_ACK);
          this.socket.end();
          return;
        case NBD_OPT_LIST: {
          if (len) {
            this.sendError(option, NBD_REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
            break;
          }
          for (const e of this.ctx.list()) {
            const name = Buffer.from(e.name, 'utf8');
            const desc = Buffer.from(e.description, 'utf8');
            const d = Buffer.allocUnsafe(4 + name.length + desc.length);
            d.writeUInt32BE(name.length, 0);
            name.copy(d, 4);
            desc.copy(d, 4 + name.length);
            this.sendOptionReply(option, NBD_REP_SERVER, d);
          }
          this.sendOptionReply(option, NBD_REP_ACK);
          break;
        }
        case NBD_OPT_INFO:
        case NBD_OPT_GO:
          if (this.infoOrGo(option, data)) return this.enterTransmission();
          break;
        case NBD_OPT_STRUCTURED_REPLY:
          if (len) {
            this.sendError(option, NBD_REP_ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
            break;
          }
          this.structured = true;
          this.sendOptionReply(option, NBD_REP_ACK);
          break;
        case NBD_OPT_LIST_META_CONTEXT:
        case NBD_OPT_SET_META_CONTEXT:
          this.metaContext(option, data);
          break;
        default:
          // STARTTLS (no TLS here), EXTENDED_HEADERS and anything unknown.
          this.sendError(option, NBD_REP_ERR_UNSUP, `option ${option} is not supported`);
      }
    }
  }

  /** NBD_OPT_INFO / NBD_OPT_GO; returns true when transmission must start. */
  private infoOrGo(option: number, data: Buffer): boolean {
    if (data.length < 6) {
      this.sendError(option, NBD_REP_ERR_INVALID, 'option data too short');
      return false;
    }
    const nameLen = data.readUInt32BE(0);
    if (nameLen > data.length - 6 || nameLen > NBD_MAX_STRING) {
      this.sendError(option, NBD_REP_ERR_INVALID, 'bad export name length');
      return false;
    }
    const name = data.toString('utf8', 4, 4 + nameLen);
    const n = data.readUInt16BE(4 + nameLen);
    if (6 + nameLen + 2 * n !== data.length) {
      this.sendError(option, NBD_REP_ERR_INVALID, 'information request count does not match the length');
      return false;
    }
    const wanted = new Set<number>();
    for (let i = 0; i < n; i++) wanted.add(data.readUInt16BE(6 + nameLen + 2 * i));
    const found = this.ctx.lookup(name);
    if (!found) {
      this.sendError(option, NBD_REP_ERR_UNKNOWN, `unknown export '${name.slice(0, 256)}'`);
      return false;
    }
    const exp = found.exp;
    const bs = hardLimitBlockSize(exp.blockSize);
    const flags = this.transmissionFlags(exp);
    const ex = Buffer.allocUnsafe(12);
    ex.writeUInt16BE(NBD_INFO_EXPORT, 0);
    ex.writeBigUInt64BE(BigInt(exp.size), 2);
    ex.writeUInt16BE(flags, 10);
    this.sendOptionReply(option, NBD_REP_INFO, ex);
    if (wanted.has(NBD_INFO_NAME)) {
      const nb = Buffer.from(found.name, 'utf8');
      const b = Buffer.allocUnsafe(2 + nb.length);
      b.writeUInt16BE(NBD_INFO_NAME, 0);
      nb.copy(b, 2);
      this.sendOptionReply(option, NBD_REP_INFO, b);
    }
    if (wanted.has(NBD_INFO_DESCRIPTION) && exp.description) {
      const db = Buffer.from(exp.description.slice(0, NBD_MAX_STRING), 'utf8');
      const b = Buffer.allocUnsafe(2 + db.length);
      b.writeUInt16BE(NBD_INFO_DESCRIPTION, 0);
      db.copy(b, 2);
      this.sendOptionReply(option, NBD_REP_INFO, b);
    }
    // Always advertise block sizes: our maximum (32 MiB) is not the protocol default.
    const b = Buffer.allocUnsafe(14);
    b.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
    b.writeUInt32BE(bs.minimum, 2);
    b.writeUInt32BE(bs.preferred, 6);
    b.writeUInt32BE(bs.maximum, 10);
    this.sendOptionReply(option, NBD_REP_INFO, b);
    this.sendOptionReply(option, NBD_REP_ACK);
    if (option !== NBD_OPT_GO) return false;
    this.select(found.name, exp);
    return true;
  }

  private metaContext(option: number, data: Buffer): void {
    if (option === NBD_OPT_SET_META_CONTEXT) {
      this.metaExport = null;
      this.baseAllocation = false;
    }
    if (!this.structured) {
      this.sendError(option, NBD_REP_ERR_INVALID, 'negotiate NBD_OPT_STRUCTURED_REPLY first');
      return;
    }
    const parsed = parseMetaRequest(data);
    if (!parsed) {
      this.sendError(option, NBD_REP_ERR_INVALID, 'malformed metadata context request');
      return;
    }
    if (parsed.queries.length > 1024) {
      this.sendError(option, NBD_REP_ERR_TOO_BIG, 'too many queries');
      return;
    }
    if (!this.ctx.lookup(parsed.name)) {
      this.sendError(option, NBD_REP_ERR_UNKNOWN, `unknown export '${parsed.name.slice(0, 256)}'`);
      return;
    }
    let base = false;
    if (option === NBD_OPT_LIST_META_CONTEXT) {
      base =
        parsed.queries.length === 0 || parsed.queries.some((q) => q === 'base:' || q === BASE_ALLOCATION);
    } else {
      base = parsed.queries.includes(BASE_ALLOCATION);
    }
    if (base) {
      const nb = Buffer.from(BASE_ALLOCATION, 'utf8');
      const d = Buffer.allocUnsafe(4 + nb.length);
      d.writeUInt32BE(option === NBD_OPT_SET_META_CONTEXT ? CONTEXT_ID_BASE : 0, 0);
      nb.copy(d, 4);
      this.sendOptionReply(option, NBD_REP_META_CONTEXT, d);
    }
    if (option === NBD_OPT_SET_META_CONTEXT) {
      this.metaExport = parsed.name;
      this.baseAllocation = base;
    }
    this.sendOptionReply(option, NBD_REP_ACK);
  }

  private select(name: string, exp: NbdExport): void {
    this.exp = exp;
    this.exportName = name;
    this.blockSize = hardLimitBlockSize(exp.blockSize);
    // Contexts only count when they were selected for the export finally chosen.
    if (this.metaExport === null || this.ctx.lookup(this.metaExport)?.exp !== exp)
      this.baseAllocation = false;
  }

  private transmissionFlags(exp: NbdExport = this.exp!): number {
    let f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_CACHE;
    if (exp.readOnly || !exp.write) f |= NBD_FLAG_READ_ONLY;
    else {
      f |= NBD_FLAG_SEND_WRITE_ZEROES;
      if (exp.trim) f |= NBD_FLAG_SEND_TRIM;
    }
    if (this.structured) f |= NBD_FLAG_SEND_DF;
    if (exp.multiConn ?? exp.readOnly) f |= NBD_FLAG_CAN_MULTI_CONN;
    return f;
  }

  private enterTransmission(): void {
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    this.queue = this.reader!.detach();
    this.reader = null;
    this.transmission = true;
    this.socket.on('data', (chunk: Buffer) => {
      this.queue!.push(chunk);
      this.parse();
    });
    this.socket.on('drain', () => this.maybeResume());
    this.socket.resume();
    this.parse();
  }

  // -------------------------------------------------------------------------------------------
  // Transmission

  private overloaded(): boolean {
    const l = this.ctx.limits;
    return (
      this.inFlight >= l.maxInFlight ||
      (this.inFlight > 0 && this.inFlightBytes >= l.maxInFlightBytes) ||
      this.socket.writableLength > l.maxWriteBuffer
    );
  }

  private maybeResume(): void {
    if (this.paused && !this.disconnecting && !this.overloaded()) {
      this.paused = false;
      this.socket.resume();
      this.parse();
    }
  }

  private armPartialTimer(): void {
    if (this.partialTimer) return;
    this.partialTimer = setTimeout(() => {
      this.ctx.report(new Error('client stalled in the middle of a request'), 'transmission');
      this.socket.destroy();
    }, this.ctx.limits.requestDataTimeoutMs);
  }

  private clearPartialTimer(): void {
    if (this.partialTimer) {
      clearTimeout(this.partialTimer);
      this.partialTimer = null;
    }
  }

  private parse(): void {
    const q = this.queue!;
    while (!this.disconnecting) {
      if (this.overloaded()) {
        this.paused = true;
        this.socket.pause();
        this.clearPartialTimer();
        return;
      }
      let req = this.pendingHeader;
      if (!req) {
        if (q.length < NBD_REQUEST_SIZE) break;
        const h = q.take(NBD_REQUEST_SIZE);
        if (h.readUInt32BE(0) !== NBD_REQUEST_MAGIC) {
          this.ctx.report(new Error('bad request magic'), 'transmission');
          this.socket.destroy();
          return;
        }
        const hi = h.readUInt32BE(16);
        req = {
          flags: h.readUInt16BE(4),
          type: h.readUInt16BE(6),
          cookie: Buffer.from(h.subarray(8, 16)),
          // Offsets beyond 2^53 cannot be valid: make them fail the range check.
          offset: hi >= 0x200000 ? Number.MAX_SAFE_INTEGER : hi * 0x100000000 + h.readUInt32BE(20),
          length: h.readUInt32BE(24),
        };
        if (req.type === NBD_CMD_WRITE) {
          if (req.length > this.blockSize.maximum) {
            // The payload cannot be refused without reading it; the specification allows a hard
            // disconnect for writes this large.
            this.ctx.report(new Error(`WRITE of ${req.length} bytes exceeds the maximum`), 'transmission');
            this.socket.destroy();
            return;
          }
          this.pendingHeader = req;
        }
      }
      if (req.type === NBD_CMD_WRITE) {
        if (q.length < req.length) break;
        req.payload = q.take(req.length);
        this.pendingHeader = null;
      }
      if (req.type === NBD_CMD_DISC) {
        this.disconnecting = true;
        this.socket.pause();
        if (this.inFlight === 0) this.socket.end();
        else this.idleWaiters.push(() => this.socket.end());
        return;
      }
      this.dispatch(req);
    }
    if (q.length > 0 || this.pendingHeader) this.armPartialTimer();
    else this.clearPartialTimer();
  }

  private dispatch(req: Request): void {
    const bytes = req.type === NBD_CMD_READ || req.type === NBD_CMD_WRITE ? req.length : 0;
    this.inFlight++;
    this.inFlightBytes += bytes;
    this.handle(req)
      .catch((err: unknown) => {
        if (err instanceof NbdReplyError) return this.replyError(req, err.errno, err.message);
        this.ctx.report(err, `export '${this.exportName}'`);
        this.replyError(req, errorToNbdErrno(err), err instanceof Error ? err.message : String(err));
      })
      .finally(() => {
        this.inFlight--;
        this.inFlightBytes -= bytes;
        if (this.inFlight === 0 && this.idleWaiters.length) {
          const w = this.idleWaiters;
          this.idleWaiters = [];
          for (const f of w) f();
        }
        this.maybeResume();
      });
  }

  private check(cond: boolean, errno: number, message: string): void {
    if (!cond) throw new NbdReplyError(errno, message);
  }

  private async handle(req: Request): Promise<void> {
    const exp = this.exp!;
    const { type, flags, offset, length } = req;
    const inRange = offset <= exp.size && length <= exp.size - offset;
    const writable = !exp.readOnly && exp.write !== undefined;
    const fua = (flags & NBD_CMD_FLAG_FUA) !== 0;
    switch (type) {
      case NBD_CMD_READ: {
        this.check((flags & ~(NBD_CMD_FLAG_DF | NBD_CMD_FLAG_FUA)) === 0, NBD_EINVAL, 'invalid flags');
        this.check(
          !(flags & NBD_CMD_FLAG_DF) || this.structured,
          NBD_EINVAL,
          'DF without structured replies',
        );
        this.check(inRange, NBD_EINVAL, 'read past the end of the export');
        this.check(length <= this.blockSize.maximum, NBD_EINVAL, 'read larger than the maximum block size');
        return this.doRead(req, exp, (flags & NBD_CMD_FLAG_DF) !== 0);
      }
      case NBD_CMD_WRITE: {
        this.check((flags & ~NBD_CMD_FLAG_FUA) === 0, NBD_EINVAL, 'invalid flags');
        this.check(writable, NBD_EPERM, 'export is read-only');
        this.check(inRange, NBD_ENOSPC, 'write past the end of the export');
        if (length) await exp.write!(offset, req.payload!);
        if (fua && exp.flush) await exp.flush();
        return this.replyOk(req);
      }
      case NBD_CMD_FLUSH:
        this.check((flags & ~NBD_CMD_FLAG_FUA) === 0, NBD_EINVAL, 'invalid flags');
        if (writable && exp.flush) await exp.flush();
        return this.replyOk(req);
      case NBD_CMD_TRIM:
        this.check((flags & ~NBD_CMD_FLAG_FUA) === 0, NBD_EINVAL, 'invalid flags');
        this.check(writable, NBD_EPERM, 'export is read-only');
        this.check(exp.trim !== undefined, NBD_EINVAL, 'TRIM is not supported');
        this.check(inRange, NBD_EINVAL, 'trim past the end of the export');
        if (length) await exp.trim!(offset, length);
        if (fua && exp.flush) await exp.flush();
        return this.replyOk(req);
      case NBD_CMD_WRITE_ZEROES: {
        this.check((flags & NBD_CMD_FLAG_FAST_ZERO) === 0, NBD_EINVAL, 'FAST_ZERO was not advertised');
        this.check((flags & ~(NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE)) === 0, NBD_EINVAL, 'invalid flags');
        this.check(writable, NBD_EPERM, 'export is read-only');
        this.check(inRange, NBD_ENOSPC, 'write zeroes past the end of the export');
        if (length) {
          if (exp.writeZeroes)
            await exp.writeZeroes(offset, length, { noHole: (flags & NBD_CMD_FLAG_NO_HOLE) !== 0 });
          else {
            for (let done = 0; done < length; done += ZERO_CHUNK.length) {
              const n = Math.min(ZERO_CHUNK.length, length - done);
              await exp.write!(offset + done, ZERO_CHUNK.subarray(0, n));
            }
          }
        }
        if (fua && exp.flush) await exp.flush();
        return this.replyOk(req);
      }
      case NBD_CMD_CACHE:
        this.check((flags & ~NBD_CMD_FLAG_FUA) === 0, NBD_EINVAL, 'invalid flags');
        this.check(inRange, NBD_EINVAL, 'cache past the end of the export');
        if (length && exp.cache) await exp.cache(offset, length);
        return this.replyOk(req);
      case NBD_CMD_BLOCK_STATUS:
        this.check((flags & ~(NBD_CMD_FLAG_REQ_ONE | NBD_CMD_FLAG_FUA)) === 0, NBD_EINVAL, 'invalid flags');
        this.check(this.structured && this.baseAllocation, NBD_EINVAL, 'no metadata context selected');
        this.check(length > 0, NBD_EINVAL, 'zero-length block status');
        this.check(inRange, NBD_EINVAL, 'block status past the end of the export');
        return this.doBlockStatus(req, exp, (flags & NBD_CMD_FLAG_REQ_ONE) !== 0);
      default:
        throw new NbdReplyError(NBD_EINVAL, `unknown command ${type}`);
    }
  }

  private async doRead(req: Request, exp: NbdExport, df: boolean): Promise<void> {
    const { offset, length } = req;
    if (!this.structured) {
      const data = length ? await exp.read(offset, length) : undefined;
      if (this.socket.destroyed) return;
      const h = this.simpleHeader(req, 0);
      if (data) {
        this.socket.cork();
        this.socket.write(h);
        this.socket.write(data);
        this.socket.uncork();
      } else this.socket.write(h);
      return;
    }
    if (length === 0) {
      this.socket.write(this.chunkHeader(req, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 0));
      return;
    }
    if (!df && exp.readSparse) {
      const segs = await exp.readSparse(offset, length);
      if (this.socket.destroyed) return;
      let pos = offset;
      for (const s of segs) {
        if (s.offset !== pos || s.length <= 0 || (s.data && s.data.length !== s.length)) {
          throw new Error('export readSparse returned inconsistent segments');
        }
        pos += s.length;
      }
      if (pos !== offset + length) throw new Error('export readSparse did not cover the request');
      this.socket.cork();
      segs.forEach((s, i) => {
        const last = i === segs.length - 1 ? NBD_REPLY_FLAG_DONE : 0;
        if (s.data) this.writeDataChunk(req, last, s.offset, s.data);
        else {
          const h = this.chunkHeader(req, last, NBD_REPLY_TYPE_OFFSET_HOLE, 12);
          const b = Buffer.allocUnsafe(32);
          h.copy(b, 0);
          b.writeUInt32BE(Math.floor(s.offset / 0x100000000), 20);
          b.writeUInt32BE(s.offset >>> 0, 24);
          b.writeUInt32BE(s.length, 28);
          this.socket.write(b);
        }
      });
      this.socket.uncork();
      return;
    }
    const data = await exp.read(offset, length);
    if (this.socket.destroyed) return;
    this.socket.cork();
    this.writeDataChunk(req, NBD_REPLY_FLAG_DONE, offset, data);
    this.socket.uncork();
  }

  private writeDataChunk(req: Request, flags: number, offset: number, data: Buffer): void {
    const h = Buffer.allocUnsafe(28);
    h.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(NBD_REPLY_TYPE_OFFSET_DATA, 6);
    req.cookie.copy(h, 8);
    h.writeUInt32BE(data.length + 8, 16);
    h.writeUInt32BE(Math.floor(offset / 0x100000000), 20);
    h.writeUInt32BE(offset >>> 0, 24);
    this.socket.write(h);
    this.socket.write(data);
  }

  private async doBlockStatus(req: Request, exp: NbdExport, reqOne: boolean): Promise<void> {
    const { offset, length } = req;
    const end = offset + length;
    const max = reqOne ? 1 : this.ctx.limits.maxExtentsPerReply;
    const out: { length: number; flags: number }[] = [];
    let pos = offset;
    if (exp.blockStatus) {
      const list = await exp.blockStatus(offset, length);
      for (const e of list) {
        if (out.length >= max || pos >= end) break;
        const s = Math.max(e.offset, pos);
        const t = Math.min(e.offset + e.length, end);
        if (s > pos) break; // a gap: stop here, the client asks again
        if (t <= s) continue;
        const flags = e.data ? 0 : NBD_STATE_ZERO | (e.hole === false ? 0 : NBD_STATE_HOLE);
        const last = out[out.length - 1];
        if (last && last.flags === flags) last.length += t - s;
        else out.push({ length: t - s, flags });
        pos = t;
      }
    }
    if (out.length === 0) out.push({ length: end - offset, flags: 0 });
    if (this.socket.destroyed) return;
    const payload = 4 + 8 * out.length;
    const b = Buffer.allocUnsafe(20 + payload);
    this.chunkHeader(req, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, payload).copy(b, 0);
    b.writeUInt32BE(CONTEXT_ID_BASE, 20);
    out.forEach((e, i) => {
      b.writeUInt32BE(e.length, 24 + 8 * i);
      b.writeUInt32BE(e.flags, 28 + 8 * i);
    });
    this.socket.write(b);
  }

  private simpleHeader(req: Request, errno: number): Buffer {
    const h = Buffer.allocUnsafe(16);
    h.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
    h.writeUInt32BE(errno, 4);
    req.cookie.copy(h, 8);
    return h;
  }

  private chunkHeader(req: Request, flags: number, type: number, length: number): Buffer {
    const h = Buffer.allocUnsafe(20);
    h.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    req.cookie.copy(h, 8);
    h.writeUInt32BE(length, 16);
    return h;
  }

  private replyOk(req: Request): void {
    if (this.socket.destroyed) return;
    this.socket.write(this.simpleHeader(req, 0));
  }

  private replyError(req: Request, errno: number, message: string): void {
    if (this.socket.destroyed) return;
    if (this.disconnecting && errno === 0) return;
    if (!this.structured) {
      this.socket.write(this.simpleHeader(req, errno));
      return;
    }
    const msg = Buffer.from(message.slice(0, 200), 'utf8');
    const b = Buffer.allocUnsafe(26 + msg.length);
    this.chunkHeader(req, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, 6 + msg.length).copy(b, 0);
    b.writeUInt32BE(errno, 20);
    b.writeUInt16BE(msg.length, 24);
    msg.copy(b, 26);
    this.socket.write(b);
  }
}

/** Parses LIST/SET_META_CONTEXT data; null when malformed. */
function parseMetaRequest(data: Buffer): { name: string; queries: string[] } | null {
  if (data.length < 8) return null;
  const nameLen = data.readUInt32BE(0);
  if (nameLen > NBD_MAX_STRING || 4 + nameLen + 4 > data.length) return null;
  const name = data.toString('utf8', 4, 4 + nameLen);
  let p = 4 + nameLen;
  const n = data.readUInt32BE(p);
  p += 4;
  const queries: string[] = [];
  for (let i = 0; i < n; i++) {
    if (p + 4 > data.length) return null;
    const l = data.readUInt32BE(p);
    p += 4;
    if (l > NBD_MAX_STRING || p + l > data.length) return null;
    queries.push(data.toString('utf8', p, p + l));
    p += l;
    if (queries.length > 4096) return null;
  }
  return p === data.length ? { name, queries } : null;
}
