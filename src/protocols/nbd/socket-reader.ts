/** Promise-based exact reads from a socket, used during the handshake phase. */
import type { Socket } from 'node:net';
import { ByteQueue } from './byte-queue.js';
import { closedError } from './errors.js';
import type { SocketInput } from './socket-input.js';

const HIGH_WATER = 1024 * 1024;

/**
 * Buffers what a socket receives and hands it out in exact-sized pieces. Pauses the socket while
 * more than 1 MiB is buffered so a peer cannot make us hold unbounded data during negotiation.
 */
export class SocketReader {
  readonly queue = new ByteQueue();
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;
  private readonly onData = (chunk: Buffer): void => {
    this.queue.push(chunk);
    if (this.queue.length > HIGH_WATER) this.socket.pause();
    this.serve();
  };
  private readonly onEnd = (): void => this.fail(closedError('NBD peer closed the connection'));
  private readonly onError = (err: Error): void =>
    this.fail(closedError(`NBD socket error: ${err.message}`, err));

  /**
   * @param input the socket's `onread` router when it has one (the socket then emits no 'data'):
   *   what it receives is copied into the queue until {@link detach}.
   */
  constructor(
    private readonly socket: Socket,
    private readonly input?: SocketInput,
  ) {
    if (input) {
      input.attach({
        directTarget: () => null,
        filled: () => undefined,
        received: (chunk) => this.onData(Buffer.from(chunk)),
      });
    } else {
      socket.on('data', this.onData);
    }
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
    socket.on('error', this.onError);
  }

  /** Resolves with exactly `n` bytes, or rejects (E_CLOSED) when the socket ends first. */
  read(n: number): Promise<Buffer> {
    if (this.waiter) return Promise.reject(new Error('SocketReader: concurrent read'));
    if (this.queue.length >= n) return Promise.resolve(this.take(n));
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
      this.socket.resume();
    });
  }

  /** Fails the pending and all later reads with `err`. */
  fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    const w = this.waiter;
    this.waiter = null;
    w?.reject(err);
  }

  /** Stops listening; returns the bytes received but not yet consumed. */
  detach(): ByteQueue {
    this.input?.attach(null);
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    this.socket.off('error', this.onError);
    return this.queue;
  }

  private take(n: number): Buffer {
    const b = this.queue.take(n);
    if (this.queue.length <= HIGH_WATER) this.socket.resume();
    // Copy small views so they do not pin large socket chunks.
    return b;
  }

  private serve(): void {
    const w = this.waiter;
    if (w && this.queue.length >= w.n) {
      this.waiter = null;
      w.resolve(this.take(w.n));
    }
  }
}
