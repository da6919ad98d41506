/**
 * Server command handlers of the transmission phase: validation of each request against the
 * export and the negotiated session, the call into the {@link NbdExport}, and the success reply.
 */
import type { Socket } from 'node:net';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
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
  NBD_REPLY_FLAG_DONE,
  NBD_STATE_HOLE,
  NBD_STATE_ZERO,
} from './constants.js';
import type { NbdExport, ReadSegment } from './export.js';
import { CONTEXT_ID_BASE, type ServerSession } from './server-handshake.js';
import {
  type StatusExtent,
  blockStatusChunk,
  dataChunkHeader,
  holeChunk,
  noneChunk,
  simpleReply,
} from './server-replies.js';

/** A parsed request (WRITE with its payload). */
export interface NbdRequest {
  flags: number;
  type: number;
  cookie: Buffer;
  offset: number;
  length: number;
  payload?: Buffer;
}

/** Thrown inside request handling to answer with a given NBD error value. */
export class NbdReplyError extends Error {
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(message);
  }
}

const ZERO_CHUNK = Buffer.alloc(1024 * 1024);

function check(cond: boolean, errno: number, message: string): void {
  if (!cond) throw new NbdReplyError(errno, message);
}

/** Throws unless `segs` are contiguous, consistent, and cover exactly the request. */
function checkSegments(segs: readonly ReadSegment[], offset: number, length: number): void {
  let pos = offset;
  for (const s of segs) {
    if (s.offset !== pos || s.length <= 0 || (s.data && s.data.length !== s.length)) {
      throw new Error('export readSparse returned inconsistent segments');
    }
    pos += s.length;
  }
  if (pos !== offset + length) throw new Error('export readSparse did not cover the request');
}

/** Executes requests on the session's export and writes their successful replies. */
export class CommandHandler {
  /** Releases of held reads whose replies are still being written. */
  private readonly held = new Set<() => void>();

  constructor(
    private readonly socket: Socket,
    private readonly session: ServerSession,
    private readonly maxExtentsPerReply: number,
  ) {
    // Writes still queued when the socket goes away may never report back: release on close.
    socket.once('close', () => {
      const all = [...this.held];
      this.held.clear();
      for (const release of all) release();
    });
  }

  /** Handles one request; throws {@link NbdReplyError} (or the export's error) to fail it. */
  async handle(req: NbdRequest): Promise<void> {
    const { exp, structured } = this.session;
    const { type, flags, offset, length } = req;
    const inRange = offset <= exp.size && length <= exp.size - offset;
    const writable = !exp.readOnly && exp.write !== undefined;
    const fua = (flags & NBD_CMD_FLAG_FUA) !== 0;
    switch (type) {
      case NBD_CMD_READ: {
        check((flags & ~(NBD_CMD_FLAG_DF | NBD_CMD_FLAG_FUA)) === 0, NBD_EINVAL, 'invalid flags');
        check(!(flags & NBD_CMD_FLAG_DF) || structured, NBD_EINVAL, 'DF without structured replies');
        check(inRange, NBD_EINVAL, 'read past the end of the export');
        check(
          length <= this.session.blockSize.maximum,
          NBD_EINVAL,
          'read larger than the maximum block size',
        );
        return this.doRead(req, exp, (flags & NBD_CMD_FLAG_DF) !== 0);
      }
      case NBD_CMD_WRITE: {
        check((flags & ~NBD_CMD_FLAG_FUA) === 0, NBD_EINVAL, 'invalid flags');
        check(writable, NBD_EPERM, 'export is read-only');
        check(inRange, NBD_ENOSPC, 'write past the end of the export');
        if (length) await exp.write!(offset, req.payload!);
        if (fua && exp.flush) await exp.flush();
        return this.replyOk(req);
      }
      case NBD_CMD_FLUSH:
        check((flags & ~NBD_CMD_FLAG_FUA) === 0, NBD_EINVAL, 'invalid flags');
        if (writable && exp.flush) await exp.flush();
        return this.replyOk(req);
      case NBD_CMD_TRIM:
        check((flags & ~NBD_CMD_FLAG_FUA) === 0, NBD_EINVAL, 'invalid flags');
        check(writable, NBD_EPERM, 'export is read-only');
        check(exp.trim !== undefined, NBD_EINVAL, 'TRIM is not supported');
        check(inRange, NBD_EINVAL, 'trim past the end of the export');
        if (length) await exp.trim!(offset, length);
        if (fua && exp.flush) await exp.flush();
        return this.replyOk(req);
      case NBD_CMD_WRITE_ZEROES: {
        check((flags & NBD_CMD_FLAG_FAST_ZERO) === 0, NBD_EINVAL, 'FAST_ZERO was not advertised');
        check((flags & ~(NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE)) === 0, NBD_EINVAL, 'invalid flags');
        check(writable, NBD_EPERM, 'export is read-only');
        check(inRange, NBD_ENOSPC, 'write zeroes past the end of the export');
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
        check((flags & ~NBD_CMD_FLAG_FUA) === 0, NBD_EINVAL, 'invalid flags');
        check(inRange, NBD_EINVAL, 'cache past the end of the export');
        if (length && exp.cache) await exp.cache(offset, length);
        return this.replyOk(req);
      case NBD_CMD_BLOCK_STATUS:
        check((flags & ~(NBD_CMD_FLAG_REQ_ONE | NBD_CMD_FLAG_FUA)) === 0, NBD_EINVAL, 'invalid flags');
        check(structured && this.session.baseAllocation, NBD_EINVAL, 'no metadata context selected');
        check(length > 0, NBD_EINVAL, 'zero-length block status');
        check(inRange, NBD_EINVAL, 'block status past the end of the export');
        return this.doBlockStatus(req, exp, (flags & NBD_CMD_FLAG_REQ_ONE) !== 0);
      default:
        throw new NbdReplyError(NBD_EINVAL, `unknown command ${type}`);
    }
  }

  private replyOk(req: NbdRequest): void {
    if (this.socket.destroyed) return;
    this.socket.write(simpleReply(req.cookie, 0));
  }

  private async doRead(req: NbdRequest, exp: NbdExport, df: boolean): Promise<void> {
    const { offset, length } = req;
    if (!this.session.structured) {
      const data = length ? await exp.read(offset, length) : undefined;
      if (this.socket.destroyed) return;
      const h = simpleReply(req.cookie, 0);
      if (data) {
        this.socket.cork();
        this.socket.write(h);
        this.socket.write(data);
        this.socket.uncork();
      } else this.socket.write(h);
      return;
    }
    if (length === 0) {
      this.socket.write(noneChunk(req.cookie));
      return;
    }
    if (!df && exp.readSparseHeld) {
      const { segments, release } = await exp.readSparseHeld(offset, length);
      let once = false;
      const done = (): void => {
        if (once) return;
        once = true;
        this.held.delete(done);
        release();
      };
      try {
        checkSegments(segments, offset, length);
      } catch (err) {
        done();
        throw err;
      }
      if (this.socket.destroyed) return done();
      this.held.add(done);
      // The buffers are lent: give them back once the last write has reached the kernel.
      this.writeSegments(req, segments, done);
      return;
    }
    if (!df && exp.readSparse) {
      const segs = await exp.readSparse(offset, length);
      if (this.socket.destroyed) return;
      checkSegments(segs, offset, length);
      this.writeSegments(req, segs);
      return;
    }
    const data = await exp.read(offset, length);
    if (this.socket.destroyed) return;
    this.socket.cork();
    this.writeDataChunk(req, NBD_REPLY_FLAG_DONE, offset, data);
    this.socket.uncork();
  }

  /** Writes a READ reply made of OFFSET_DATA / OFFSET_HOLE chunks; `written` after the last. */
  private writeSegments(req: NbdRequest, segs: readonly ReadSegment[], written?: () => void): void {
    this.socket.cork();
    segs.forEach((s, i) => {
      const last = i === segs.length - 1;
      const flags = last ? NBD_REPLY_FLAG_DONE : 0;
      const cb = last && written ? () => written() : undefined;
      if (s.data) {
        this.socket.write(dataChunkHeader(req.cookie, flags, s.offset, s.data.length));
        this.socket.write(s.data, cb);
      } else this.socket.write(holeChunk(req.cookie, flags, s.offset, s.length), cb);
    });
    this.socket.uncork();
  }

  private writeDataChunk(req: NbdRequest, flags: number, offset: number, data: Buffer): void {
    this.socket.write(dataChunkHeader(req.cookie, flags, offset, data.length));
    this.socket.write(data);
  }

  private async doBlockStatus(req: NbdRequest, exp: NbdExport, reqOne: boolean): Promise<void> {
    const { offset, length } = req;
    const end = offset + length;
    const max = reqOne ? 1 : this.maxExtentsPerReply;
    const out: StatusExtent[] = [];
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
    this.socket.write(blockStatusChunk(req.cookie, CONTEXT_ID_BASE, out));
  }
}
