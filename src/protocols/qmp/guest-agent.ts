/**
 * Client for the QEMU guest agent (qemu-ga) reached through a host-side chardev socket wired to
 * a virtio-serial port (`org.qemu.guest_agent.0`) in the guest.
 *
 * The agent speaks QMP-style JSON lines but has no greeting, serves one command at a time, and
 * its channel has no connection semantics: stale bytes from an earlier client may be pending in
 * either direction. So every session (and every timeout) starts with `guest-sync-delimited`
 * (qga/qapi-schema.json): send a 0xFF byte (flushes the agent's parser) then the command with a
 * random id; the agent answers 0xFF followed by `{"return": id}`. Everything before the 0xFF and
 * every reply with another id is stale and dropped.
 */
import { randomInt } from 'node:crypto';
import type { Socket } from 'node:net';
import { VmvaultError } from '../../core/errors.js';
import { closedError, QmpError, timeoutError } from './errors.js';
import { truncate } from './messages.js';
import { describeAddress, openSocket, type SocketAddress } from './transport.js';

/** Options of {@link GuestAgentClient.connect}. */
export interface GuestAgentOptions {
  /** Socket connect limit (default 5 s). */
  connectTimeoutMs?: number;
  /**
   * How long to wait for the agent to answer the sync handshake (default 3 s). A guest without a
   * running agent never answers: this is how quickly its absence is detected.
   */
  syncTimeoutMs?: number;
  /** Default per-command limit (default 10 s). */
  commandTimeoutMs?: number;
  /** Limit for guest-fsfreeze-freeze (default 60 s: it syncs every filesystem). */
  freezeTimeoutMs?: number;
}

/** `GuestAgentInfo`. */
export interface GuestAgentInfo {
  version: string;
  supported_commands: { name: string; enabled: boolean; 'success-response': boolean }[];
}

/** `GuestFsfreezeStatus`. */
export type FsfreezeStatus = 'thawed' | 'frozen';

interface Inflight {
  command: string;
  id: number;
  resolve(v: unknown): void;
  reject(err: unknown): void;
}

/** A session with a QEMU guest agent. Create with {@link GuestAgentClient.connect}. */
export class GuestAgentClient {
  private buf: Buffer = Buffer.alloc(0);
  /** Set while a sync is waiting: bytes before the 0xFF sentinel are discarded. */
  private syncing: { id: number; sawSentinel: boolean; resolve(): void } | undefined;
  private inflight: Inflight | undefined;
  private needSync = true;
  private chain: Promise<unknown> = Promise.resolve();
  private dead: string | undefined;
  private onDeath: ((err: unknown) => void) | undefined;

  private constructor(
    private readonly sock: Socket,
    /** Where the agent's chardev listens. */
    readonly address: SocketAddress,
    private readonly options: GuestAgentOptions,
  ) {
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
    sock.on('error', (err) => this.die(err.message));
    sock.on('close', () => this.die('socket closed'));
  }

  /**
   * Connects to the agent's chardev socket and synchronises. Fails with `E_TIMEOUT` (details
   * `reason: 'no-agent'`) when nothing answers within `syncTimeoutMs`: no agent in the guest, or
   * not started yet.
   */
  static async connect(
    address: SocketAddress | string,
    options: GuestAgentOptions = {},
  ): Promise<GuestAgentClient> {
    const addr = typeof address === 'string' ? { path: address } : address;
    const sock = await openSocket(addr, { timeoutMs: options.connectTimeoutMs ?? 5000 });
    const client = new GuestAgentClient(sock, addr, options);
    try {
      await client.sync();
    } catch (err) {
      client.close();
      throw err;
    }
    return client;
  }

  /** Re-runs the guest-sync-delimited handshake (done automatically after any timeout). */
  sync(timeoutMs = this.options.syncTimeoutMs ?? 3000): Promise<void> {
    return this.serialize(() => this.doSync(timeoutMs));
  }

  /**
   * Runs an agent command and returns its `return` value. Rejects with {@link QmpError} on an
   * error reply, `E_TIMEOUT` when the agent does not answer (the next call re-syncs) and
   * `E_CLOSED` when the socket closes.
   */
  execute<T = unknown>(command: string, args?: object, options: { timeoutMs?: number } = {}): Promise<T> {
    return this.serialize(async () => {
      if (this.needSync) await this.doSync(this.options.syncTimeoutMs ?? 3000);
      return (await this.send(
        command,
        args,
        options.timeoutMs ?? this.options.commandTimeoutMs ?? 10_000,
      )) as T;
    });
  }

  /** `guest-ping`: resolves when the agent answers. */
  async ping(timeoutMs?: number): Promise<void> {
    await this.execute('guest-ping', undefined, timeoutMs === undefined ? {} : { timeoutMs });
  }

  /** `guest-info`: agent version and supported commands. */
  info(): Promise<GuestAgentInfo> {
    return this.execute<GuestAgentInfo>('guest-info');
  }

  /** `guest-fsfreeze-freeze`: syncs and freezes every local filesystem; returns how many. */
  fsfreezeFreeze(): Promise<number> {
    return this.execute<number>('guest-fsfreeze-freeze', undefined, {
      timeoutMs: this.options.freezeTimeoutMs ?? 60_000,
    });
  }

  /** `guest-fsfreeze-freeze-list`: freezes only the given mount points. */
  fsfreezeFreezeList(mountpoints: string[]): Promise<number> {
    return this.execute<number>(
      'guest-fsfreeze-freeze-list',
      { mountpoints },
      {
        timeoutMs: this.options.freezeTimeoutMs ?? 60_000,
      },
    );
  }

  /** `guest-fsfreeze-thaw`: thaws; returns how many filesystems were thawed. */
  fsfreezeThaw(): Promise<number> {
    return this.execute<number>('guest-fsfreeze-thaw');
  }

  /** `guest-fsfreeze-status`. */
  fsfreezeStatus(): Promise<FsfreezeStatus> {
    return this.execute<FsfreezeStatus>('guest-fsfreeze-status');
  }

  /** Closes the socket; a command in flight rejects with `E_CLOSED`. */
  close(): void {
    this.die('closed by client');
    this.sock.destroy();
  }

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  private doSync(timeoutMs: number): Promise<void> {
    if (this.dead) return Promise.reject(closedError('guest agent', this.dead));
    const id = randomInt(1, 2 ** 47);
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.syncing = undefined;
        this.onDeath = undefined;
        this.needSync = true;
        reject(
          new VmvaultError(
            'E_TIMEOUT',
            `guest agent at ${describeAddress(this.address)} did not answer guest-sync-delimited within ${timeoutMs} ms`,
            {
              hint: 'is qemu-guest-agent installed and running in the guest?',
              details: { reason: 'no-agent' },
            },
          ),
        );
      }, timeoutMs);
      this.onDeath = (err) => {
        clearTimeout(timer);
        this.syncing = undefined;
        reject(err);
      };
      this.syncing = {
        id,
        sawSentinel: false,
        resolve: () => {
          clearTimeout(timer);
          this.syncing = undefined;
          this.onDeath = undefined;
          this.needSync = false;
          resolve();
        },
      };
      this.buf = Buffer.alloc(0);
      const req = JSON.stringify({ execute: 'guest-sync-delimited', arguments: { id } });
      this.sock.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(`${req}\n`)]));
    });
  }

  private send(command: string, args: object | undefined, timeoutMs: number): Promise<unknown> {
    if (this.dead) return Promise.reject(closedError(`guest agent ${command}`, this.dead));
    const id = randomInt(1, 2 ** 47);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.inflight = undefined;
        this.onDeath = undefined;
        this.needSync = true;
        reject(timeoutError(`guest agent ${command}`, timeoutMs, 'the agent may be busy or gone'));
      }, timeoutMs);
      this.inflight = {
        command,
        id,
        resolve: (v) => {
          clearTimeout(timer);
          this.inflight = undefined;
          this.onDeath = undefined;
          resolve(v);
        },
        reject: (err) => {
          clearTimeout(timer);
          this.inflight = undefined;
          this.onDeath = undefined;
          reject(err);
        },
      };
      this.onDeath = (err) => this.inflight?.reject(err);
      const msg: Record<string, unknown> = { execute: command, id };
      if (args !== undefined) msg.arguments = args;
      this.sock.write(`${JSON.stringify(msg)}\n`);
    });
  }

  private onData(chunk: Buffer): void {
    let data = chunk;
    if (this.syncing && !this.syncing.sawSentinel) {
      const at = data.indexOf(0xff);
      if (at < 0) return; // stale output from before our sync: drop
      this.syncing.sawSentinel = true;
      data = data.subarray(at + 1);
      this.buf = Buffer.alloc(0);
    }
    this.buf = this.buf.length ? Buffer.concat([this.buf, data]) : data;
    for (;;) {
      // A sentinel inside the stream (a late reply to an older sync) resets the parser.
      const ff = this.buf.indexOf(0xff);
      const nl = this.buf.indexOf(0x0a);
      if (ff >= 0 && (nl < 0 || ff < nl)) {
        this.buf = this.buf.subarray(ff + 1);
        continue;
      }
      if (nl < 0) break;
      const line = this.buf.subarray(0, nl).toString('utf8').trim();
      this.buf = this.buf.subarray(nl + 1);
      if (line) this.onLine(line);
    }
  }

  private onLine(line: string): void {
    let msg: { return?: unknown; error?: { class?: string; desc?: string }; id?: unknown };
    try {
      msg = JSON.parse(line);
    } catch {
      return; // half a stale reply
    }
    if (this.syncing) {
      if (msg.return === this.syncing.id) this.syncing.resolve();
      return;
    }
    const f = this.inflight;
    if (!f) return; // stale
    if (msg.id !== undefined && msg.id !== f.id) return; // reply to a timed-out command
    if ('error' in msg && msg.error) {
      f.reject(new QmpError(f.command, msg.error.class ?? 'GenericError', msg.error.desc ?? truncate(line)));
    } else {
      f.resolve(msg.return);
    }
  }

  private die(reason: string): void {
    if (this.dead) return;
    this.dead = reason;
    const cb = this.onDeath;
    this.onDeath = undefined;
    cb?.(closedError('guest agent', reason));
  }
}
