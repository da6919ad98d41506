/**
 * A QMP (QEMU Machine Protocol) client for QEMU and qemu-storage-daemon monitors.
 *
 * Flow (docs/interop/qmp-spec.rst): connect, read the greeting, send `qmp_capabilities`, then
 * commands `{"execute", "arguments", "id"}`. Replies carry the command's `id`; events may arrive
 * at any time, including before the reply of the command that caused them, so the client keeps
 * a bounded event history and {@link QmpClient.waitForEvent} can look back to a mark.
 */
import type { Socket } from 'node:net';
import { VmvaultError } from '../../core/errors.js';
import { closedError, QmpError, timeoutError } from './errors.js';
import { EventHub, type EventPredicate, type WaitForEventOptions } from './events.js';
import { decodeQmpLine, LineSplitter, type QmpEvent, type QmpGreeting, truncate } from './messages.js';
import { describeAddress, openSocket, type SocketAddress } from './transport.js';

/** Options of {@link QmpClient.connect}. */
export interface QmpClientOptions {
  /** Limit for connect + greeting + capabilities negotiation (default 10 s). */
  connectTimeoutMs?: number;
  /** Keep retrying a refused/missing socket this long (default 0: fail at once). */
  retryConnectMs?: number;
  /** Default per-command timeout (default 30 s). */
  commandTimeoutMs?: number;
  /** How many recent events to keep for {@link QmpClient.waitForEvent} `since` (default 1000). */
  eventHistory?: number;
  /** Ask for out-of-band execution when the server offers it (default false). */
  enableOob?: boolean;
}

/** Per-command options. */
export interface ExecuteOptions {
  /** Overrides the client's default command timeout. */
  timeoutMs?: number;
  /** Send as `exec-oob` (only after negotiating the `oob` capability). */
  oob?: boolean;
}

interface Pending {
  command: string;
  resolve(value: unknown): void;
  reject(err: unknown): void;
  timer: NodeJS.Timeout;
}

/** A connected QMP monitor. Create with {@link QmpClient.connect}. */
export class QmpClient {
  private sock: Socket | undefined;
  private readonly pending = new Map<number, Pending>();
  private readonly hub: EventHub;
  private nextId = 1;
  private splitter = new LineSplitter();
  private greetingValue: QmpGreeting | undefined;
  private closedByUser = false;
  private deathReason: string | undefined;
  private readonly closeListeners = new Set<(reason: string) => void>();
  private oobEnabled = false;
  private leftover: string[] = [];

  private constructor(
    /** Address the client connects (and reconnects) to. */
    readonly address: SocketAddress,
    private readonly options: QmpClientOptions,
  ) {
    this.hub = new EventHub(options.eventHistory ?? 1000);
  }

  /**
   * Connects to a QMP monitor at `address` (`{path}` for a unix socket, `{host, port}` for TCP),
   * reads the greeting and negotiates capabilities. Fails with `E_TIMEOUT` when no greeting
   * comes (a QEMU monitor serves one client at a time: another client may hold it).
   */
  static async connect(address: SocketAddress | string, options: QmpClientOptions = {}): Promise<QmpClient> {
    const addr = typeof address === 'string' ? { path: address } : address;
    const client = new QmpClient(addr, options);
    await client.open();
    return client;
  }

  /** The server's greeting (version and offered capabilities) from the latest connection. */
  get greeting(): QmpGreeting {
    if (!this.greetingValue) throw new VmvaultError('E_CLOSED', 'QMP: not connected');
    return this.greetingValue;
  }

  /** True while the connection is up and negotiated. */
  get connected(): boolean {
    return this.sock !== undefined && this.deathReason === undefined && !this.closedByUser;
  }

  /** Whether out-of-band execution was negotiated. */
  get oob(): boolean {
    return this.oobEnabled;
  }

  /**
   * Sequence number of the newest event received. Take it before sending a command and pass it
   * as `since` to {@link waitForEvent} so events that beat the command's reply are not missed.
   */
  eventMark(): number {
    return this.hub.mark;
  }

  /** Buffered events newer than `since` (default: all kept), oldest first. */
  recentEvents(since = 0): QmpEvent[] {
    return this.hub.recent(since);
  }

  /**
   * Runs `command` and resolves with its `return` value. Rejects with {@link QmpError} for an
   * error reply, `E_TIMEOUT` when no reply comes in time (a later reply is discarded; QEMU still
   * runs the command) and `E_CLOSED` when the connection dies first.
   */
  execute<T = unknown>(command: string, args?: object, options: ExecuteOptions = {}): Promise<T> {
    const sock = this.sock;
    if (!sock || !this.connected) {
      return Promise.reject(
        new VmvaultError(
          'E_CLOSED',
          `QMP ${command}: not connected${this.deathReason ? ` (${this.deathReason})` : ''}`,
        ),
      );
    }
    if (options.oob && !this.oobEnabled) {
      return Promise.reject(
        new VmvaultError('E_UNSUPPORTED', `QMP ${command}: out-of-band execution was not negotiated`),
      );
    }
    const id = this.nextId++;
    const timeoutMs = options.timeoutMs ?? this.options.commandTimeoutMs ?? 30_000;
    const msg: Record<string, unknown> = { [options.oob ? 'exec-oob' : 'execute']: command, id };
    if (args !== undefined) msg.arguments = args;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pending.delete(id)) {
          reject(timeoutError(`QMP ${command}`, timeoutMs, 'QEMU may be busy or hung'));
        }
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      sock.write(`${JSON.stringify(msg)}\n`);
    });
  }

  /**
   * Runs `command`, then waits for the event it causes. Events that arrive before the reply are
   * not missed. The event is returned; the command's return value is discarded.
   */
  async executeAndWait<D = Record<string, unknown>>(
    command: string,
    args: object | undefined,
    eventName: string,
    predicate?: EventPredicate<D>,
    timeoutMs = 30_000,
  ): Promise<QmpEvent<D>> {
    const since = this.eventMark();
    await this.execute(command, args, { timeoutMs });
    return this.waitForEvent<D>(eventName, predicate, timeoutMs, { since });
  }

  /**
   * Waits up to `timeoutMs` for an event named `name` (any event when `undefined`) whose
   * payload satisfies `predicate`. With `options.since` (from {@link eventMark}) buffered events
   * newer than the mark count too. Rejects with `E_TIMEOUT`, or `E_CLOSED` if the connection dies.
   */
  waitForEvent<D = Record<string, unknown>>(
    name: string | undefined,
    predicate?: EventPredicate<D>,
    timeoutMs = 30_000,
    options: WaitForEventOptions = {},
  ): Promise<QmpEvent<D>> {
    if (this.closedByUser) return Promise.reject(new VmvaultError('E_CLOSED', 'QMP: client closed'));
    return this.hub.wait(name, predicate, timeoutMs, options);
  }

  /** Calls `listener` for every event; returns an unsubscribe function. */
  onEvent(listener: (event: QmpEvent) => void): () => void {
    return this.hub.listen(listener);
  }

  /**
   * Iterates over events arriving from now on, optionally only those named in `names`. Survives
   * reconnects; ends when {@link close} is called or the loop breaks.
   */
  events(names?: string[]): AsyncIterableIterator<QmpEvent> {
    const set = names ? new Set(names) : undefined;
    return this.hub.iterate(set ? (e) => set.has(e.event) : undefined);
  }

  /** Calls `listener` whenever the connection is lost (not on {@link close}). */
  onClose(listener: (reason: string) => void): () => void {
    this.closeListeners.add(listener);
    return () => this.closeListeners.delete(listener);
  }

  /**
   * Drops the current connection (pending commands reject with `E_CLOSED`) and connects again,
   * re-reading the greeting and re-negotiating capabilities. Retries a missing or refused socket
   * for `retryMs` (default 10 s), for use while QEMU restarts.
   */
  async reconnect(retryMs = 10_000): Promise<void> {
    if (this.closedByUser) throw new VmvaultError('E_CLOSED', 'QMP: client closed');
    this.teardown('reconnecting');
    await this.open(retryMs);
  }

  /** Closes the connection. Pending commands and waiters reject with `E_CLOSED`; iterators end. */
  async close(): Promise<void> {
    if (this.closedByUser) return;
    this.closedByUser = true;
    const sock = this.sock;
    this.teardown('closed by client');
    this.hub.endIterators();
    if (sock && !sock.destroyed) {
      await new Promise<void>((resolve) => {
        sock.once('close', () => resolve());
        sock.end();
        setTimeout(() => {
          sock.destroy();
          resolve();
        }, 1000).unref();
      });
    }
  }

  private async open(retryMs = this.options.retryConnectMs ?? 0): Promise<void> {
    const limit = this.options.connectTimeoutMs ?? 10_000;
    const what = `QMP connect to ${describeAddress(this.address)}`;
    const sock = await openSocket(this.address, { timeoutMs: limit, retryUntilMs: retryMs });
    this.splitter = new LineSplitter();
    this.deathReason = undefined;
    try {
      const greeting = await this.readGreeting(sock, limit, what);
      this.attach(sock);
      this.greetingValue = greeting;
      const enable = this.options.enableOob && greeting.capabilities.includes('oob') ? ['oob'] : [];
      await this.execute('qmp_capabilities', enable.length ? { enable } : undefined, { timeoutMs: limit });
      this.oobEnabled = enable.length > 0;
    } catch (err) {
      sock.destroy();
      this.sock = undefined;
      throw err;
    }
  }

  /** Reads lines until the greeting; anything else first is a protocol error. */
  private readGreeting(sock: Socket, limit: number, what: string): Promise<QmpGreeting> {
    return new Promise((resolve, reject) => {
      const done = (err: unknown, g?: QmpGreeting): void => {
        clearTimeout(timer);
        sock.off('data', onData);
        sock.off('close', onClose);
        sock.off('error', onError);
        if (err) reject(err);
        else resolve(g as QmpGreeting);
      };
      const timer = setTimeout(
        () => done(timeoutError(`${what}: greeting`, limit, 'another client may hold the monitor')),
        limit,
      );
      const onData = (chunk: Buffer): void => {
        const lines = this.splitter.push(chunk);
        if (lines.length === 0) return;
        // Anything after the greeting (none expected before we speak) would be lost: keep it.
        const [first, ...rest] = lines;
        this.leftover = rest;
        try {
          const msg = decodeQmpLine(first ?? '');
          if (msg.kind !== 'greeting')
            throw new VmvaultError('E_PROTOCOL', `${what}: expected greeting, got ${truncate(first ?? '')}`);
          done(undefined, msg.greeting);
        } catch (err) {
          done(err);
        }
      };
      const onClose = (): void => done(closedError(what, 'server closed the connection before the greeting'));
      const onError = (err: Error): void => done(closedError(what, err.message, err));
      sock.on('data', onData);
      sock.on('close', onClose);
      sock.on('error', onError);
    });
  }

  private attach(sock: Socket): void {
    this.sock = sock;
    sock.on('data', (chunk: Buffer) => {
      if (this.sock !== sock) return;
      for (const line of this.splitter.push(chunk)) {
        if (line.trim() === '') continue;
        this.handleLine(line);
      }
    });
    sock.on('error', (err) => this.onSocketGone(sock, err.message));
    sock.on('close', () => this.onSocketGone(sock, 'server closed the connection'));
    const early = this.leftover;
    this.leftover = [];
    for (const line of early) if (line.trim() !== '') this.handleLine(line);
  }

  private handleLine(line: string): void {
    let msg: ReturnType<typeof decodeQmpLine>;
    try {
      msg = decodeQmpLine(line);
    } catch {
      return; // garbage from the server: nothing we can match it to
    }
    if (msg.kind === 'event') {
      this.hub.dispatch({ event: msg.event, data: msg.data, timestamp: msg.timestamp });
      return;
    }
    if (msg.kind === 'greeting') return;
    const id = typeof msg.id === 'number' ? msg.id : undefined;
    const p = id === undefined ? undefined : this.pending.get(id);
    if (!p || id === undefined) {
      // An error without id (parse error) belongs to no command we can name; per spec, unknown
      // ids are dropped. A timed-out command's late reply lands here too.
      return;
    }
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (msg.kind === 'return') p.resolve(msg.value);
    else p.reject(new QmpError(p.command, msg.errorClass, msg.desc));
  }

  private onSocketGone(sock: Socket, reason: string): void {
    if (this.sock !== sock || this.deathReason !== undefined) return;
    this.deathReason = reason;
    this.failPending(reason);
    sock.destroy();
    if (!this.closedByUser) {
      for (const l of [...this.closeListeners]) {
        try {
          l(reason);
        } catch {
          // ignore listener failures
        }
      }
    }
  }

  private teardown(reason: string): void {
    const sock = this.sock;
    if (sock) {
      this.deathReason = reason;
      this.sock = undefined;
      this.failPending(reason);
      if (reason !== 'closed by client') sock.destroy();
    }
    if (reason === 'closed by client') this.hub.failWaiters(closedError('QMP', reason));
  }

  private failPending(reason: string): void {
    const err = (command: string): VmvaultError => closedError(`QMP ${command}`, reason);
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.reject(err(p.command));
    }
    this.hub.failWaiters(closedError('QMP event wait', reason));
  }
}
