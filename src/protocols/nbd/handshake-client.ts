/** Client side of the fixed newstyle handshake (option haggling). */
import type { Socket } from 'node:net';
import { VmvaultError } from '../../core/errors.js';
import {
  NBD_CLISERV_MAGIC,
  NBD_DEFAULT_MIN_BLOCK,
  NBD_DEFAULT_PREFERRED_BLOCK,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_INIT_MAGIC,
  NBD_MAX_STRING,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_NAMES,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_OPTS_MAGIC,
  NBD_REP_ACK,
  NBD_REP_ERR_NAMES,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_SHUTDOWN,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_FLAG_ERROR,
  NBD_REP_INFO,
  NBD_REP_MAGIC,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
} from './constants.js';
import { protocolError } from './errors.js';
import type { SocketReader } from './socket-reader.js';

/** Largest option reply payload we accept (a LIST of many exports fits easily). */
const MAX_OPTION_REPLY = 1024 * 1024;

/** Block size constraints (NBD_INFO_BLOCK_SIZE). */
export interface NbdBlockSize {
  minimum: number;
  preferred: number;
  /** Largest request length the server accepts (0xffffffff = no inherent limit). */
  maximum: number;
}

/** What a successful handshake established. */
export interface NbdNegotiated {
  exportName: string;
  size: number;
  /** Transmission flags (`NBD_FLAG_*`). */
  flags: number;
  structuredReplies: boolean;
  /** Selected metadata contexts: name → server-assigned id. */
  metaContexts: Map<string, number>;
  blockSize: NbdBlockSize;
  /** Whether the server sent NBD_INFO_BLOCK_SIZE (we then must obey it). */
  blockSizeAdvertised: boolean;
  description?: string;
  /** True when the server did not know NBD_OPT_GO and we fell back to NBD_OPT_EXPORT_NAME. */
  usedExportName: boolean;
}

/** An export listed by NBD_OPT_LIST. */
export interface NbdListedExport {
  name: string;
  description: string;
}

interface OptionReply {
  type: number;
  data: Buffer;
}

/** Drives option haggling over a connected socket. Each method sends one option. */
export class ClientHandshake {
  fixedNewstyle = false;
  noZeroes = false;
  structuredReplies = false;

  constructor(
    private readonly socket: Socket,
    private readonly reader: SocketReader,
  ) {}

  /** Reads the server greeting and sends our client flags. */
  async start(): Promise<void> {
    const hello = await this.reader.read(16);
    if (hello.readBigUInt64BE(0) !== NBD_INIT_MAGIC) {
      throw protocolError('bad server greeting magic (not an NBD server?)');
    }
    const second = hello.readBigUInt64BE(8);
    if (second === NBD_CLISERV_MAGIC) {
      throw new VmvaultError('E_UNSUPPORTED', 'NBD server speaks the obsolete oldstyle handshake');
    }
    if (second !== NBD_OPTS_MAGIC) throw protocolError('bad IHAVEOPT magic in server greeting');
    const flags = (await this.reader.read(2)).readUInt16BE(0);
    this.fixedNewstyle = (flags & NBD_FLAG_FIXED_NEWSTYLE) !== 0;
    this.noZeroes = (flags & NBD_FLAG_NO_ZEROES) !== 0;
    const cflags = Buffer.alloc(4);
    cflags.writeUInt32BE(
      (this.fixedNewstyle ? NBD_FLAG_C_FIXED_NEWSTYLE : 0) | (this.noZeroes ? NBD_FLAG_C_NO_ZEROES : 0),
    );
    this.socket.write(cflags);
  }

  private sendOption(option: number, data: Buffer = Buffer.alloc(0)): void {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(NBD_OPTS_MAGIC, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(data.length, 12);
    this.socket.write(data.length ? Buffer.concat([h, data]) : h);
  }

  private async readReply(option: number): Promise<OptionReply> {
    const h = await this.reader.read(20);
    if (h.readBigUInt64BE(0) !== NBD_REP_MAGIC) throw protocolError('bad option reply magic');
    const opt = h.readUInt32BE(8);
    if (opt !== option) {
      throw protocolError(
        `option reply for option ${opt} while waiting for ${NBD_OPT_NAMES[option] ?? option}`,
      );
    }
    const type = h.readUInt32BE(12);
    const len = h.readUInt32BE(16);
    if (len > MAX_OPTION_REPLY) throw protocolError(`option reply of ${len} bytes is too large`);
    const data = len ? Buffer.from(await this.reader.read(len)) : Buffer.alloc(0);
    return { type, data };
  }

  /** Sends an option and collects replies until the final ACK or error. */
  private async exchange(
    option: number,
    data?: Buffer,
  ): Promise<{ replies: OptionReply[]; final: OptionReply }> {
    this.sendOption(option, data);
    const replies: OptionReply[] = [];
    for (;;) {
      const r = await this.readReply(option);
      if (r.type === NBD_REP_ACK || (r.type & NBD_REP_FLAG_ERROR) !== 0) return { replies, final: r };
      if (replies.length > 100_000) throw protocolError('too many option replies');
      replies.push(r);
    }
  }

  /** NBD_OPT_STRUCTURED_REPLY; returns whether the server agreed. */
  async structuredReply(): Promise<boolean> {
    if (!this.fixedNewstyle) return false;
    const { final } = await this.exchange(NBD_OPT_STRUCTURED_REPLY);
    if (final.type === NBD_REP_ACK) this.structuredReplies = true;
    else if (final.type !== NBD_REP_ERR_UNSUP) throw optionError(NBD_OPT_STRUCTURED_REPLY, final);
    return this.structuredReplies;
  }

  /** NBD_OPT_SET_META_CONTEXT (or LIST when `list`); returns name → id. */
  async metaContext(exportName: string, queries: string[], list = false): Promise<Map<string, number>> {
    const option = list ? NBD_OPT_LIST_META_CONTEXT : NBD_OPT_SET_META_CONTEXT;
    const { replies, final } = await this.exchange(option, encodeMetaContextRequest(exportName, queries));
    if (final.type !== NBD_REP_ACK) throw optionError(option, final);
    const out = new Map<string, number>();
    for (const r of replies) {
      if (r.type !== NBD_REP_META_CONTEXT || r.data.length < 4) {
        throw protocolError(`unexpected reply type ${r.type} to ${NBD_OPT_NAMES[option]}`);
      }
      out.set(r.data.toString('utf8', 4), r.data.readUInt32BE(0));
    }
    return out;
  }

  /** NBD_OPT_LIST. */
  async list(): Promise<NbdListedExport[]> {
    if (!this.fixedNewstyle) throw new VmvaultError('E_UNSUPPORTED', 'NBD server cannot list exports');
    const { replies, final } = await this.exchange(NBD_OPT_LIST);
    if (final.type !== NBD_REP_ACK) throw optionError(NBD_OPT_LIST, final);
    return replies.map((r) => {
      if (r.type !== NBD_REP_SERVER || r.data.length < 4) throw protocolError('bad NBD_REP_SERVER reply');
      const n = r.data.readUInt32BE(0);
      if (n > r.data.length - 4) throw protocolError('NBD_REP_SERVER name overruns the reply');
      return { name: r.data.toString('utf8', 4, 4 + n), description: r.data.toString('utf8', 4 + n) };
    });
  }

  /** NBD_OPT_ABORT: polite end of negotiation. Tolerates servers that just close. */
  async abort(): Promise<void> {
    if (!this.fixedNewstyle) return;
    try {
      this.sendOption(NBD_OPT_ABORT);
      await this.readReply(NBD_OPT_ABORT);
    } catch {
      // The specification allows the server to close without replying.
    }
  }

  /**
   * Enters transmission: NBD_OPT_GO asking for block sizes, falling back to NBD_OPT_EXPORT_NAME
   * when the server answers ERR_UNSUP (or does not do fixed newstyle).
   */
  async go(exportName: string): Promise<Omit<NbdNegotiated, 'metaContexts'>> {
    const base = {
      exportName,
      structuredReplies: this.structuredReplies,
      blockSize: {
        minimum: NBD_DEFAULT_MIN_BLOCK,
        preferred: NBD_DEFAULT_PREFERRED_BLOCK,
        maximum: 0xffffffff,
      },
      blockSizeAdvertised: false,
    };
    if (this.fixedNewstyle) {
      const name = Buffer.from(exportName, 'utf8');
      const req = Buffer.alloc(4 + name.length + 2 + 6);
      req.writeUInt32BE(name.length, 0);
      name.copy(req, 4);
      let p = 4 + name.length;
      req.writeUInt16BE(3, p);
      req.writeUInt16BE(NBD_INFO_BLOCK_SIZE, p + 2);
      req.writeUInt16BE(NBD_INFO_NAME, p + 4);
      req.writeUInt16BE(NBD_INFO_DESCRIPTION, p + 6);
      p += 8;
      const { replies, final } = await this.exchange(NBD_OPT_GO, req.subarray(0, p));
      if (final.type === NBD_REP_ACK) {
        let size = -1;
        let flags = 0;
        let description: string | undefined;
        let canonical = exportName;
        for (const r of replies) {
          if (r.type !== NBD_REP_INFO) throw protocolError(`unexpected reply type ${r.type} to NBD_OPT_GO`);
          if (r.data.length < 2) throw protocolError('NBD_REP_INFO too short');
          const info = r.data.readUInt16BE(0);
          if (info === NBD_INFO_EXPORT) {
            if (r.data.length !== 12) throw protocolError('NBD_INFO_EXPORT must be 12 bytes');
            size = toSafeSize(r.data.readBigUInt64BE(2));
            flags = r.data.readUInt16BE(10);
          } else if (info === NBD_INFO_BLOCK_SIZE) {
            if (r.data.length !== 14) throw protocolError('NBD_INFO_BLOCK_SIZE must be 14 bytes');
            base.blockSize = checkBlockSize(
              r.data.readUInt32BE(2),
              r.data.readUInt32BE(6),
              r.data.readUInt32BE(10),
            );
            base.blockSizeAdvertised = true;
          } else if (info === NBD_INFO_DESCRIPTION) {
            description = r.data.toString('utf8', 2, Math.min(r.data.length, 2 + NBD_MAX_STRING));
          } else if (info === NBD_INFO_NAME) {
            canonical = r.data.toString('utf8', 2, Math.min(r.data.length, 2 + NBD_MAX_STRING));
          }
          // Unknown information types are ignored, as the specification requires.
        }
        if (size < 0) throw protocolError('server accepted NBD_OPT_GO without NBD_INFO_EXPORT');
        return {
          ...base,
          exportName: canonical,
          size,
          flags,
          ...(description !== undefined ? { description } : {}),
          usedExportName: false,
        };
      }
      if (final.type !== NBD_REP_ERR_UNSUP) throw optionError(NBD_OPT_GO, final, exportName);
    }
    // Fallback: NBD_OPT_EXPORT_NAME (no reply header; failure = disconnect).
    this.sendOption(NBD_OPT_EXPORT_NAME, Buffer.from(exportName, 'utf8'));
    let head: Buffer;
    try {
      head = await this.reader.read(10 + (this.noZeroes ? 0 : 124));
    } catch (err) {
      throw new VmvaultError('E_NOT_FOUND', `NBD server refused export '${exportName}'`, { cause: err });
    }
    return {
      ...base,
      size: toSafeSize(head.readBigUInt64BE(0)),
      flags: head.readUInt16BE(8),
      usedExportName: true,
    };
  }
}

/** Encodes the data of LIST/SET_META_CONTEXT: export name and queries. */
export function encodeMetaContextRequest(exportName: string, queries: string[]): Buffer {
  const parts: Buffer[] = [];
  const name = Buffer.from(exportName, 'utf8');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(name.length);
  parts.push(head, name);
  const count = Buffer.alloc(4);
  count.writeUInt32BE(queries.length);
  parts.push(count);
  for (const q of queries) {
    const b = Buffer.from(q, 'utf8');
    const l = Buffer.alloc(4);
    l.writeUInt32BE(b.length);
    parts.push(l, b);
  }
  return Buffer.concat(parts);
}

function toSafeSize(v: bigint): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw protocolError(`export size ${v} is too large`);
  return Number(v);
}

function isPow2(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

function checkBlockSize(minimum: number, preferred: number, maximum: number): NbdBlockSize {
  if (!isPow2(minimum) || minimum > 65536) throw protocolError(`invalid minimum block size ${minimum}`);
  if (!isPow2(preferred) || preferred < minimum)
    throw protocolError(`invalid preferred block size ${preferred}`);
  if (maximum !== 0xffffffff && (maximum < minimum || maximum % minimum !== 0)) {
    throw protocolError(`invalid maximum block size ${maximum}`);
  }
  return { minimum, preferred, maximum };
}

function optionError(option: number, reply: OptionReply, exportName?: string): VmvaultError {
  const name = NBD_REP_ERR_NAMES[reply.type] ?? `error ${reply.type >>> 0}`;
  const msg = reply.data.length
    ? `: ${reply.data.toString('utf8', 0, Math.min(reply.data.length, 512))}`
    : '';
  const what = `NBD server rejected ${NBD_OPT_NAMES[option] ?? option}${exportName !== undefined ? ` for export '${exportName}'` : ''} with ${name}${msg}`;
  const details = { reply: name, option: NBD_OPT_NAMES[option] ?? option };
  if (reply.type === NBD_REP_ERR_UNKNOWN) return new VmvaultError('E_NOT_FOUND', what, { details });
  if (reply.type === NBD_REP_ERR_SHUTDOWN) return new VmvaultError('E_CLOSED', what, { details });
  if (
    reply.type === NBD_REP_ERR_UNSUP ||
    reply.type === NBD_REP_ERR_POLICY ||
    reply.type === NBD_REP_ERR_TLS_REQD
  ) {
    return new VmvaultError('E_UNSUPPORTED', what, { details });
  }
  if ((reply.type & NBD_REP_FLAG_ERROR) === 0) return protocolError(`unexpected final reply ${reply.type}`);
  return new VmvaultError('E_PROTOCOL', what, { details });
}
