/**
 * Socket reads into memory the reader chooses (Node's `onread`): the payload of a READ reply goes
 * from the kernel straight into the caller's buffer, and everything else (headers, block status,
 * the handshake) into one small scratch buffer that is reused for every read. Without it each
 * read allocates a fresh 64 KiB chunk that is then copied once more and collected: for a backup
 * that reads gigabytes over NBD, a copy of every byte and most of the main thread's garbage.
 */

/** Whoever consumes the bytes of a connection. */
export interface InputConsumer {
  /**
   * Memory the next received bytes belong in (the rest of a READ payload), or null to read into
   * scratch. Asked before each read; the bytes are reported to {@link filled}.
   */
  directTarget(): Uint8Array | null;
  /** `n` bytes were read into the start of the last {@link directTarget}. */
  filled(n: number): void;
  /**
   * `chunk` was received into scratch memory. It is valid only during the call: what must
   * outlive it has to be copied.
   */
  received(chunk: Buffer): void;
}

/** Scratch read size: a few headers, or a small reply, per read. */
const SCRATCH_BYTES = 8192;

/** The `onread` of one socket, routing reads to the current {@link InputConsumer}. */
export class SocketInput {
  private readonly scratch = Buffer.allocUnsafe(SCRATCH_BYTES);
  private consumer: InputConsumer | null = null;
  private lastDirect: Uint8Array | null = null;
  private held: Buffer[] = [];

  /** Pass as the `onread` option of `net.connect`. */
  readonly onread = {
    buffer: (): Uint8Array => this.nextBuffer(),
    callback: (n: number, buf: Uint8Array): boolean => {
      this.onRead(n, buf);
      return true;
    },
  };

  /**
   * Hands the bytes to `consumer` from now on. Bytes that arrived while nobody consumed them
   * (copied when they were received) are delivered first.
   */
  attach(consumer: InputConsumer | null): void {
    this.consumer = consumer;
    if (!consumer) return;
    const held = this.held;
    this.held = [];
    for (const chunk of held) consumer.received(chunk);
  }

  private nextBuffer(): Uint8Array {
    const direct = this.consumer?.directTarget() ?? null;
    this.lastDirect = direct && direct.length > 0 ? direct : null;
    return this.lastDirect ?? this.scratch;
  }

  private onRead(n: number, buf: Uint8Array): void {
    if (n <= 0) return;
    if (buf === this.lastDirect && this.consumer) {
      this.lastDirect = null;
      this.consumer.filled(n);
      return;
    }
    const chunk = Buffer.from(buf.buffer, buf.byteOffset, n);
    if (this.consumer) this.consumer.received(chunk);
    else this.held.push(Buffer.from(chunk));
  }
}
