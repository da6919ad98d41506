/**
 * Incremental parser of the replies a client receives: simple replies and structured reply chunks
 * (OFFSET_DATA copied straight into the caller's buffer, OFFSET_HOLE, BLOCK_STATUS, errors).
 * Any protocol violation is reported to the connection, which then drops.
 */
import type { ByteQueue } from './byte-queue.js';
import type { NbdExtent } from './client-types.js';
import type { Pending, RequestTracker } from './client-requests.js';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_READ,
  NBD_EIO,
  NBD_ESHUTDOWN,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR_BIT,
  NBD_REPLY_TYPE_ERROR_OFFSET,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_SIMPLE_REPLY_SIZE,
  NBD_STRUCTURED_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_SIZE,
} from './constants.js';
import { serverReplyError } from './errors.js';

/** What the parser needs from its connection. */
export interface ReplyContext {
  readonly requests: RequestTracker;
  readonly structuredReplies: boolean;
  /** Selected metadata contexts: id → name. */
  readonly contextNames: ReadonlyMap<number, string>;
  /** A peer protocol violation: the connection must drop. */
  violation(message: string): void;
  /** The server answered ESHUTDOWN: disconnect politely. */
  shutdown(): void;
}

enum State {
  Header = 0,
  SimpleData = 1,
  ChunkBody = 2,
  ChunkData = 3,
}

/** Largest structured chunk payload other than OFFSET_DATA (2^20 extents of 8 bytes + id). */
const MAX_CHUNK_PAYLOAD = 8 * 1024 * 1024 + 4096;

/** Consumes received bytes from a {@link ByteQueue} and completes the matching requests. */
export class ReplyParser {
  private state = State.Header;
  private cur: Pending | undefined;
  private chunkFlags = 0;
  private chunkType = 0;
  private chunkLength = 0;
  private dataLeft = 0;
  private dataPos = 0;

  constructor(
    private readonly queue: ByteQueue,
    private readonly ctx: ReplyContext,
  ) {}

  /** Parses as much of the queued data as possible. */
  parse(): void {
    const q = this.queue;
    const requests = this.ctx.requests;
    while (!requests.failure) {
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
              if (this.ctx.structuredReplies) {
                this.ctx.violation('simple reply with data to READ after structured replies');
                return;
              }
              this.cur = p;
              this.dataLeft = p.length;
              this.dataPos = 0;
              this.state = State.SimpleData;
              continue;
            }
            if (p.cmd === NBD_CMD_BLOCK_STATUS && errv === 0) {
              this.ctx.violation('simple reply to BLOCK_STATUS');
              return;
            }
            this.complete(p, errv);
            continue;
          }
          if (magic === NBD_STRUCTURED_REPLY_MAGIC) {
            if (!this.ctx.structuredReplies) {
              this.ctx.violation('structured reply without negotiation');
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
                this.ctx.violation('OFFSET_DATA chunk for a non-READ request');
                return;
              }
              if (this.chunkLength < 9 || this.chunkLength - 8 > p.length) {
                this.ctx.violation(`OFFSET_DATA chunk of bad length ${this.chunkLength}`);
                return;
              }
            } else if (this.chunkLength > MAX_CHUNK_PAYLOAD) {
              this.ctx.violation(`structured reply chunk of ${this.chunkLength} bytes is too large`);
              return;
            }
            this.state = State.ChunkBody;
            continue;
          }
          this.ctx.violation(`bad reply magic 0x${magic.toString(16)}`);
          return;
        }
        case State.SimpleData:
        case State.ChunkData: {
          if (!this.copyData(this.cur!)) return;
          if (this.dataLeft === 0) this.dataDone();
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
              this.ctx.violation(`OFFSET_DATA at ${off}+${n} outside the request ${p.offset}+${p.length}`);
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
      }
    }
  }

  /**
   * Where the next received bytes can go without a copy: the rest of the READ payload being
   * received, once every queued byte is parsed; null otherwise.
   */
  directTarget(): Uint8Array | null {
    if (this.state !== State.SimpleData && this.state !== State.ChunkData) return null;
    if (this.queue.length > 0 || this.dataLeft === 0 || this.ctx.requests.failure) return null;
    return this.cur!.buf!.subarray(this.dataPos, this.dataPos + this.dataLeft);
  }

  /** `n` bytes of the payload were received into {@link directTarget}'s memory. */
  filled(n: number): void {
    this.dataPos += n;
    this.dataLeft -= n;
    if (this.dataLeft === 0) this.dataDone();
  }

  /** The current READ payload is complete. */
  private dataDone(): void {
    const p = this.cur!;
    const simple = this.state === State.SimpleData;
    this.state = State.Header;
    if (simple) this.complete(p, 0);
    else if (this.chunkFlags & NBD_REPLY_FLAG_DONE) this.completeStructured(p);
  }

  /** Copies what has arrived of the current data into the READ buffer; false when nothing has. */
  private copyData(p: Pending): boolean {
    const n = Math.min(this.queue.length, this.dataLeft);
    if (n === 0) return false;
    this.queue.copyTo(p.buf!, this.dataPos, n);
    this.dataPos += n;
    this.dataLeft -= n;
    return true;
  }

  private lookup(cookieHi: number, cookie: number): Pending | undefined {
    const p = cookieHi === 0 ? this.ctx.requests.get(cookie) : undefined;
    if (!p) this.ctx.violation(`reply with unknown cookie ${cookieHi ? `${cookieHi}:` : ''}${cookie}`);
    return p;
  }

  /** Handles a fully received non-data chunk. Returns false after a violation. */
  private onChunk(p: Pending, body: Buffer): boolean {
    const type = this.chunkType;
    const done = (this.chunkFlags & NBD_REPLY_FLAG_DONE) !== 0;
    if (type & NBD_REPLY_TYPE_ERROR_BIT) {
      if (body.length < 6) {
        this.ctx.violation('error chunk shorter than 6 bytes');
        return false;
      }
      const errv = body.readUInt32BE(0);
      const mlen = body.readUInt16BE(4);
      const fixed = type === NBD_REPLY_TYPE_ERROR_OFFSET ? 14 : 6;
      if (mlen > body.length - fixed) {
        this.ctx.violation('error chunk message overruns the chunk');
        return false;
      }
      const msg = body.toString('utf8', 6, 6 + mlen);
      if (!p.error) p.error = serverReplyError(errv || NBD_EIO, p.cmd, p.offset, p.length, msg || undefined);
    } else if (type === NBD_REPLY_TYPE_NONE) {
      if (body.length !== 0 || !done) {
        this.ctx.violation('NONE chunk with payload or without DONE');
        return false;
      }
    } else if (type === NBD_REPLY_TYPE_OFFSET_HOLE) {
      if (!this.onHole(p, body)) return false;
    } else if (type === NBD_REPLY_TYPE_BLOCK_STATUS) {
      if (!this.onBlockStatus(p, body)) return false;
    } else {
      this.ctx.violation(`unknown structured reply chunk type ${type}`);
      return false;
    }
    if (done) this.completeStructured(p);
    return true;
  }

  /** OFFSET_HOLE: zero-fills its part of the READ buffer. Returns false after a violation. */
  private onHole(p: Pending, body: Buffer): boolean {
    if (p.cmd !== NBD_CMD_READ || body.length !== 12) {
      this.ctx.violation('bad OFFSET_HOLE chunk');
      return false;
    }
    const off = body.readUInt32BE(0) * 0x100000000 + body.readUInt32BE(4);
    const n = body.readUInt32BE(8);
    if (n === 0 || off < p.offset || off + n > p.offset + p.length) {
      this.ctx.violation(`OFFSET_HOLE at ${off}+${n} outside the request ${p.offset}+${p.length}`);
      return false;
    }
    p.buf!.fill(0, off - p.offset, off - p.offset + n);
    p.covered += n;
    addRange(p, off, off + n);
    return true;
  }

  /** BLOCK_STATUS: records one context's extents. Returns false after a violation. */
  private onBlockStatus(p: Pending, body: Buffer): boolean {
    if (p.cmd !== NBD_CMD_BLOCK_STATUS || body.length < 12 || (body.length - 4) % 8 !== 0) {
      this.ctx.violation('bad BLOCK_STATUS chunk');
      return false;
    }
    const id = body.readUInt32BE(0);
    if (!this.ctx.contextNames.has(id)) {
      this.ctx.violation(`BLOCK_STATUS chunk for unknown context id ${id}`);
      return false;
    }
    p.extents ??= new Map();
    if (p.extents.has(id)) {
      this.ctx.violation(`two BLOCK_STATUS chunks for context id ${id}`);
      return false;
    }
    const list: NbdExtent[] = [];
    let at = p.offset;
    for (let i = 4; i < body.length; i += 8) {
      const len = body.readUInt32BE(i);
      if (len === 0) {
        this.ctx.violation('BLOCK_STATUS extent of length 0');
        return false;
      }
      list.push({ offset: at, length: len, flags: body.readUInt32BE(i + 4) });
      at += len;
    }
    p.extents.set(id, list);
    return true;
  }

  private completeStructured(p: Pending): void {
    const requests = this.ctx.requests;
    if (p.error) {
      requests.finish(p, p.error);
      return;
    }
    if (p.cmd === NBD_CMD_READ && (p.covered !== p.length || overlaps(p.ranges))) {
      this.ctx.violation(`READ reply chunks cover ${p.covered} of ${p.length} bytes or overlap`);
      return;
    }
    if (p.cmd === NBD_CMD_BLOCK_STATUS) {
      if (!p.extents || p.extents.size !== this.ctx.contextNames.size) {
        this.ctx.violation('BLOCK_STATUS reply lacks a chunk for a selected context');
        return;
      }
      requests.finish(p, null, p.extents);
      return;
    }
    requests.finish(p, null);
  }

  private complete(p: Pending, errv: number): void {
    if (errv) {
      const e = serverReplyError(errv, p.cmd, p.offset, p.length);
      this.ctx.requests.finish(p, e);
      if (errv === NBD_ESHUTDOWN) this.ctx.shutdown();
      return;
    }
    this.ctx.requests.finish(p, null);
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
