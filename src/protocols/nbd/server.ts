/** NBD server: serves named exports over TCP and/or unix sockets. */
import { type Server, type Socket, createServer } from 'node:net';
import { VmvaultError } from '../../core/errors.js';
import { removeStaleSocket } from '../../core/unix-socket.js';
import { NBD_MAX_PAYLOAD } from './constants.js';
import type { NbdExport } from './export.js';
import { ServerConnection } from './server-connection.js';
import type { ServerContext, ServerLimits } from './server-context.js';

/** Options of {@link NbdServer}. Every limit has a safe default. */
export interface NbdServerOptions {
  /** Time a client has from connecting to entering transmission (default 10 s). */
  handshakeTimeoutMs?: number;
  /** Time a half-received request may wait for its remaining bytes (default 30 s). */
  requestDataTimeoutMs?: number;
  /** Concurrent connections; more are closed at once (default 256). */
  maxConnections?: number;
  /** Options one client may send before it is disconnected (default 256). */
  maxOptions?: number;
  /** Largest option payload accepted; larger → disconnect (default 64 KiB). */
  maxOptionLength?: number;
  /** Requests processed at once per connection before reading pauses (default 64). */
  maxInFlight?: number;
  /** READ/WRITE bytes in flight per connection before reading pauses (default 96 MiB). */
  maxInFlightBytes?: number;
  /** Unsent reply bytes per connection before reading pauses (default 32 MiB). */
  maxWriteBuffer?: number;
  /** Extents in one BLOCK_STATUS reply chunk (default 65536). */
  maxExtentsPerReply?: number;
  /** How long close() lets in-flight requests finish (default 1 s). */
  closeGraceMs?: number;
  /** Called with errors worth logging (backend failures, misbehaving clients). */
  onError?: (err: unknown, where: string) => void;
}

/** Where to listen: TCP (`port`, `host` default 127.0.0.1) or a unix socket (`socketPath`). */
export interface NbdListenOptions {
  port?: number;
  host?: string;
  socketPath?: string;
}

/** Address a listener is bound to. */
export interface NbdListenAddress {
  host?: string;
  port?: number;
  socketPath?: string;
}

interface Entry {
  name: string;
  exp: NbdExport;
  description: string;
}

/**
 * A fixed-newstyle NBD server. Add exports, then `listen()` once or several times (TCP and unix
 * sockets); `close()` stops listening and ends every connection.
 */
export class NbdServer {
  private readonly exports = new Map<string, Entry>();
  private readonly listeners: Server[] = [];
  private readonly connections = new Set<ServerConnection>();
  private readonly limits: ServerLimits;
  private readonly maxConnections: number;
  private readonly closeGraceMs: number;
  private readonly onError: (err: unknown, where: string) => void;
  private closing = false;

  constructor(opts: NbdServerOptions = {}) {
    this.limits = {
      handshakeTimeoutMs: opts.handshakeTimeoutMs ?? 10_000,
      requestDataTimeoutMs: opts.requestDataTimeoutMs ?? 30_000,
      maxOptions: opts.maxOptions ?? 256,
      maxOptionLength: opts.maxOptionLength ?? 64 * 1024,
      maxInFlight: opts.maxInFlight ?? 64,
      maxInFlightBytes: Math.max(opts.maxInFlightBytes ?? 96 * 1024 * 1024, NBD_MAX_PAYLOAD),
      maxWriteBuffer: opts.maxWriteBuffer ?? 32 * 1024 * 1024,
      maxExtentsPerReply: opts.maxExtentsPerReply ?? 65536,
    };
    this.maxConnections = opts.maxConnections ?? 256;
    this.closeGraceMs = opts.closeGraceMs ?? 1000;
    this.onError = opts.onError ?? (() => {});
  }

  /** Adds (or replaces) an export. The empty name '' is the default export. */
  addExport(name: string, exp: NbdExport): void {
    if (Buffer.byteLength(name) > 4096)
      throw new VmvaultError('E_USAGE', 'NBD export names are at most 4096 bytes');
    if (!Number.isSafeInteger(exp.size) || exp.size < 0) {
      throw new VmvaultError('E_USAGE', `NBD export '${name}' has an invalid size ${exp.size}`);
    }
    this.exports.set(name, { name, exp, description: exp.description ?? '' });
  }

  /** Removes an export from listings and new connections (existing connections keep it). */
  removeExport(name: string): boolean {
    return this.exports.delete(name);
  }

  /** Number of open client connections. */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** Starts listening; resolves with the bound address (port 0 picks a free port). */
  async listen(opts: NbdListenOptions = {}): Promise<NbdListenAddress> {
    if (this.closing) throw new VmvaultError('E_CLOSED', 'NBD server is closed');
    const server = createServer({ noDelay: true, pauseOnConnect: false }, (s) => this.accept(s));
    server.on('error', (err) => this.onError(err, 'listener'));
    if (opts.socketPath !== undefined) await removeStaleSocket(opts.socketPath);
    await new Promise<void>((resolve, reject) => {
      const onErr = (err: Error): void => {
        reject(
          new VmvaultError(
            'E_IO',
            `NBD server cannot listen on ${opts.socketPath ?? `${opts.host}:${opts.port}`}: ${err.message}`,
            {
              cause: err,
            },
          ),
        );
      };
      server.once('error', onErr);
      const done = (): void => {
        server.off('error', onErr);
        resolve();
      };
      if (opts.socketPath !== undefined) server.listen(opts.socketPath, done);
      else server.listen(opts.port ?? 10809, opts.host ?? '127.0.0.1', done);
    });
    this.listeners.push(server);
    const a = server.address();
    if (typeof a === 'string' || a === null) return { socketPath: opts.socketPath ?? String(a) };
    return { host: a.address, port: a.port };
  }

  /** Stops listening, ends every connection (after a short grace for in-flight requests). */
  async close(): Promise<void> {
    this.closing = true;
    const closing = this.listeners.map((s) => new Promise<void>((r) => s.close(() => r())));
    this.listeners.length = 0;
    await Promise.all([...this.connections].map((c) => c.shutdown(this.closeGraceMs)));
    await Promise.all(closing);
  }

  private accept(socket: Socket): void {
    if (this.closing || this.connections.size >= this.maxConnections) {
      socket.destroy();
      return;
    }
    const isClosing = (): boolean => this.closing;
    const ctx: ServerContext = {
      limits: this.limits,
      get shuttingDown() {
        return isClosing();
      },
      lookup: (name) => this.lookup(name),
      list: () => [...this.exports.values()].map((e) => ({ name: e.name, description: e.description })),
      report: (err, where) => this.onError(err, where),
    };
    const conn = new ServerConnection(socket, ctx);
    this.connections.add(conn);
    void conn.done.then(() => this.connections.delete(conn));
  }

  private lookup(name: string): { name: string; exp: NbdExport } | undefined {
    const e = this.exports.get(name);
    if (e) return e;
    if (name === '') {
      const first = this.exports.values().next();
      if (!first.done) return first.value;
    }
    return undefined;
  }
}
