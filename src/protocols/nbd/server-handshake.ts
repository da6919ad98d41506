/**
 * Server side of the fixed newstyle handshake (option haggling): greeting, client flags, then
 * EXPORT_NAME, ABORT, LIST, INFO/GO, STRUCTURED_REPLY and LIST/SET_META_CONTEXT until an export
 * is chosen.
 */
import type { Socket } from 'node:net';
import {
  BASE_ALLOCATION,
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
} from './constants.js';
import type { NbdExport, NbdExportBlockSize } from './export.js';
import type { ServerContext } from './server-context.js';
import type { SocketReader } from './socket-reader.js';

/** Context id of `base:allocation`, the only metadata context we serve. */
export const CONTEXT_ID_BASE = 0;

/** What option haggling settled for the transmission phase. */
export interface ServerSession {
  exp: NbdExport;
  exportName: string;
  blockSize: NbdExportBlockSize;
  structured: boolean;
  /** `base:allocation` was selected for this export. */
  baseAllocation: boolean;
}

/** The export's block sizes with our defaults, the maximum capped at 32 MiB. */
export function hardLimitBlockSize(b: NbdExportBlockSize | undefined): NbdExportBlockSize {
  const maximum = Math.min(b?.maximum ?? NBD_MAX_PAYLOAD, NBD_MAX_PAYLOAD);
  return { minimum: b?.minimum ?? 1, preferred: b?.preferred ?? 4096, maximum };
}

/** Transmission flags we advertise for an export. */
export function transmissionFlags(exp: NbdExport, structured: boolean): number {
  let f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_CACHE;
  if (exp.readOnly || !exp.write) f |= NBD_FLAG_READ_ONLY;
  else {
    f |= NBD_FLAG_SEND_WRITE_ZEROES;
    if (exp.trim) f |= NBD_FLAG_SEND_TRIM;
  }
  if (structured) f |= NBD_FLAG_SEND_DF;
  if (exp.multiConn ?? exp.readOnly) f |= NBD_FLAG_CAN_MULTI_CONN;
  return f;
}

/** Runs the handshake of one connection; errors thrown mean "drop the connection". */
export class ServerHandshake {
  private structured = false;
  private noZeroes = false;
  private metaExport: string | null = null;
  private baseAllocation = false;

  constructor(
    private readonly socket: Socket,
    private readonly reader: SocketReader,
    private readonly ctx: ServerContext,
  ) {}

  /** Haggles until an export is chosen (resolves with the session) or the client aborts (null). */
  async run(): Promise<ServerSession | null> {
    const reader = this.reader;
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
          const session = this.select(found.name, found.exp);
          const r = Buffer.alloc(this.noZeroes ? 10 : 134);
          r.writeBigUInt64BE(BigInt(found.exp.size), 0);
          r.writeUInt16BE(transmissionFlags(found.exp, this.structured), 8);
          this.socket.write(r);
          return session;
        }
        case NBD_OPT_ABORT:
          this.sendOptionReply(option, NBD_REP_ACK);
          this.socket.end();
          return null;
        case NBD_OPT_LIST:
          this.list(option, len);
          break;
        case NBD_OPT_INFO:
        case NBD_OPT_GO: {
          const session = this.infoOrGo(option, data);
          if (session) return session;
          break;
        }
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

  /** Sends an NBD_REP_INFO of `type` whose body is `body` (u16 type, then the body). */
  private sendInfo(option: number, type: number, body: Buffer): void {
    const b = Buffer.allocUnsafe(2 + body.length);
    b.writeUInt16BE(type, 0);
    body.copy(b, 2);
    this.sendOptionReply(option, NBD_REP_INFO, b);
  }

  /** NBD_OPT_LIST: one SERVER reply per export, then ACK. */
  private list(option: number, len: number): void {
    if (len) {
      this.sendError(option, NBD_REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
      return;
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
  }

  /** NBD_OPT_INFO / NBD_OPT_GO; returns the session when transmission must start. */
  private infoOrGo(option: number, data: Buffer): ServerSession | null {
    if (data.length < 6) {
      this.sendError(option, NBD_REP_ERR_INVALID, 'option data too short');
      return null;
    }
    const nameLen = data.readUInt32BE(0);
    if (nameLen > data.length - 6 || nameLen > NBD_MAX_STRING) {
      this.sendError(option, NBD_REP_ERR_INVALID, 'bad export name length');
      return null;
    }
    const name = data.toString('utf8', 4, 4 + nameLen);
    const n = data.readUInt16BE(4 + nameLen);
    if (6 + nameLen + 2 * n !== data.length) {
      this.sendError(option, NBD_REP_ERR_INVALID, 'information request count does not match the length');
      return null;
    }
    const wanted = new Set<number>();
    for (let i = 0; i < n; i++) wanted.add(data.readUInt16BE(6 + nameLen + 2 * i));
    const found = this.ctx.lookup(name);
    if (!found) {
      this.sendError(option, NBD_REP_ERR_UNKNOWN, `unknown export '${name.slice(0, 256)}'`);
      return null;
    }
    const exp = found.exp;
    const bs = hardLimitBlockSize(exp.blockSize);
    const ex = Buffer.allocUnsafe(10);
    ex.writeBigUInt64BE(BigInt(exp.size), 0);
    ex.writeUInt16BE(transmissionFlags(exp, this.structured), 8);
    this.sendInfo(option, NBD_INFO_EXPORT, ex);
    if (wanted.has(NBD_INFO_NAME)) this.sendInfo(option, NBD_INFO_NAME, Buffer.from(found.name, 'utf8'));
    if (wanted.has(NBD_INFO_DESCRIPTION) && exp.description) {
      this.sendInfo(
        option,
        NBD_INFO_DESCRIPTION,
        Buffer.from(exp.description.slice(0, NBD_MAX_STRING), 'utf8'),
      );
    }
    // Always advertise block sizes: our maximum (32 MiB) is not the protocol default.
    const b = Buffer.allocUnsafe(12);
    b.writeUInt32BE(bs.minimum, 0);
    b.writeUInt32BE(bs.preferred, 4);
    b.writeUInt32BE(bs.maximum, 8);
    this.sendInfo(option, NBD_INFO_BLOCK_SIZE, b);
    this.sendOptionReply(option, NBD_REP_ACK);
    if (option !== NBD_OPT_GO) return null;
    return this.select(found.name, exp);
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

  /** The session for the export finally chosen. */
  private select(name: string, exp: NbdExport): ServerSession {
    // Contexts only count when they were selected for the export finally chosen.
    if (this.metaExport === null || this.ctx.lookup(this.metaExport)?.exp !== exp)
      this.baseAllocation = false;
    return {
      exp,
      exportName: name,
      blockSize: hardLimitBlockSize(exp.blockSize),
      structured: this.structured,
      baseAllocation: this.baseAllocation,
    };
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
