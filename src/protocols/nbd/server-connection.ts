/**
 * One client connection of {@link NbdServer}: runs the handshake (`server-handshake.ts`), then the
 * transmission phase: request parsing, back-pressure, dispatch to `server-commands.ts`, error
 * replies, DISC and shutdown.
 */
import type { Socket } from 'node:net';
import type { ByteQueue } from './byte-queue.js';
import {
  NBD_CMD_DISC,
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_REQUEST_MAGIC,
  NBD_REQUEST_SIZE,
} from './constants.js';
import { errorToNbdErrno } from './errors.js';
import { CommandHandler, type NbdRequest, NbdReplyError } from './server-commands.js';
import type { ServerContext } from './server-context.js';
import { type ServerSession, ServerHandshake } from './server-handshake.js';
import { errorChunk, simpleReply } from './server-replies.js';
import { SocketReader } from './socket-reader.js';

/** Handles one accepted socket from first byte to close. */
export class ServerConnection {
  private reader: SocketReader | null;
  private queue: ByteQueue | null = null;
  private session: ServerSession | null = null;
  private commands: CommandHandler | null = null;
  private transmission = false;
  private inFlight = 0;
  private inFlightBytes = 0;
  private pendingHeader: NbdRequest | null = null;
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

  private async handshake(): Promise<void> {
    const session = await new ServerHandshake(this.socket, this.reader!, this.ctx).run();
    if (session) this.enterTransmission(session);
  }

  private enterTransmission(session: ServerSession): void {
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    this.session = session;
    this.commands = new CommandHandler(this.socket, session, this.ctx.limits.maxExtentsPerReply);
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
          if (req.length > this.session!.blockSize.maximum) {
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

  private dispatch(req: NbdRequest): void {
    const bytes = req.type === NBD_CMD_READ || req.type === NBD_CMD_WRITE ? req.length : 0;
    this.inFlight++;
    this.inFlightBytes += bytes;
    this.commands!.handle(req)
      .catch((err: unknown) => {
        if (err instanceof NbdReplyError) return this.replyError(req, err.errno, err.message);
        this.ctx.report(err, `export '${this.session!.exportName}'`);
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

  private replyError(req: NbdRequest, errno: number, message: string): void {
    if (this.socket.destroyed) return;
    if (this.disconnecting && errno === 0) return;
    if (!this.session!.structured) {
      this.socket.write(simpleReply(req.cookie, errno));
      return;
    }
    this.socket.write(errorChunk(req.cookie, errno, message));
  }
}
