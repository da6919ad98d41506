/**
 * Client request bookkeeping: 32-bit cookies, the in-flight window (extra requests wait locally),
 * per-request timeouts, completion, and failing everything when the connection is lost.
 */
import type { Socket } from 'node:net';
import { VmvaultError } from '../../core/errors.js';
import type { NbdExtent } from './client-types.js';
import { NBD_CMD_NAMES, NBD_REQUEST_MAGIC, NBD_REQUEST_SIZE } from './constants.js';

/** A request sent (or waiting to be sent) and not yet answered. */
export interface Pending {
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

/** The 28-byte request header (the upper half of our cookies is always 0). */
export function encodeRequest(
  cmd: number,
  flags: number,
  cookie: number,
  offset: number,
  length: number,
): Buffer {
  const header = Buffer.allocUnsafe(NBD_REQUEST_SIZE);
  header.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  header.writeUInt16BE(flags, 4);
  header.writeUInt16BE(cmd, 6);
  header.writeUInt32BE(0, 8);
  header.writeUInt32BE(cookie, 12);
  header.writeUInt32BE(Math.floor(offset / 0x100000000), 16);
  header.writeUInt32BE(offset >>> 0, 20);
  header.writeUInt32BE(length, 24);
  return header;
}

/** Tracks the requests of one connection, from submission to reply, timeout or failure. */
export class RequestTracker {
  private readonly pending = new Map<number, Pending>();
  private readonly waiting: Queued[] = [];
  private nextCookie = 1;
  private inFlight = 0;
  private failed: Error | null = null;
  private timer: NodeJS.Timeout | null = null;
  private idleWaiters: (() => void)[] = [];
  private corked = false;
  private readonly uncork = (): void => {
    this.corked = false;
    this.socket.uncork();
  };

  constructor(
    private readonly socket: Socket,
    private readonly maxInFlight: number,
    private readonly requestTimeoutMs: number,
  ) {}

  /** The error that ended the connection, or null while it is usable. */
  get failure(): Error | null {
    return this.failed;
  }

  /** Requests currently sent and not yet answered. */
  get inFlightCount(): number {
    return this.inFlight;
  }

  /** True while requests are in flight or waiting to be sent. */
  get busy(): boolean {
    return this.inFlight > 0 || this.waiting.length > 0;
  }

  /** Resolves once no request is in flight (or the connection failed). */
  idle(): Promise<void> {
    return new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  /** The in-flight request with this cookie. */
  get(cookie: number): Pending | undefined {
    return this.pending.get(cookie);
  }

  /** Sends a request now, or queues it when {@link maxInFlight} are already on the wire. */
  submit(
    cmd: number,
    flags: number,
    offset: number,
    length: number,
    data?: Buffer,
    buf?: Buffer,
  ): Promise<unknown> {
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
      const header = encodeRequest(cmd, flags, cookie, offset, length);
      const q: Queued = { header, data, pending };
      if (this.inFlight < this.maxInFlight) this.transmit(q);
      else this.waiting.push(q);
    });
  }

  /** Answers a request (unless it timed out) and sends the next waiting one. */
  finish(p: Pending, err: Error | null, value?: unknown): void {
    this.pending.delete(p.cookie);
    this.inFlight--;
    if (!p.abandoned) {
      if (err) p.reject(err);
      else p.resolve(value);
    }
    const next = this.waiting.shift();
    if (next && !this.failed) this.transmit(next);
    else if (this.inFlight === 0 && this.idleWaiters.length) this.wakeIdle();
  }

  /** Fails every pending and waiting request with `err`; false when already failed. */
  fail(err: Error): boolean {
    if (this.failed) return false;
    this.failed = err;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const p of this.pending.values()) if (!p.abandoned) p.reject(err);
    for (const q of this.waiting) q.pending.reject(err);
    this.pending.clear();
    this.waiting.length = 0;
    return true;
  }

  /** Releases everyone waiting in {@link idle}. */
  wakeIdle(): void {
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const f of w) f();
  }

  private transmit(q: Queued): void {
    const p = q.pending;
    p.started = Date.now();
    this.pending.set(p.cookie, p);
    this.inFlight++;
    // Requests sent in one tick leave in one writev (a batch of reads is hundreds of headers).
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(this.uncork);
    }
    this.socket.write(q.header);
    if (q.data) this.socket.write(q.data);
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
}
