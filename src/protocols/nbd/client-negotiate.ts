/**
 * Opening a client connection: connect, then option haggling under the handshake deadline, either
 * up to the transmission phase ({@link negotiate}) or for a query ending in ABORT ({@link withHandshake}).
 */
import type { Socket } from 'node:net';
import { VmvaultError } from '../../core/errors.js';
import type { ByteQueue } from './byte-queue.js';
import type { NbdClientOptions } from './client-types.js';
import { type NbdTarget, openSocket, resolveTarget } from './connect.js';
import { ClientHandshake, type NbdNegotiated } from './handshake-client.js';
import { SocketInput } from './socket-input.js';
import { SocketReader } from './socket-reader.js';

/** A connection that has entered the transmission phase. */
export interface NegotiatedConnection {
  socket: Socket;
  /** Bytes received after the handshake, not yet parsed. */
  queue: ByteQueue;
  negotiated: NbdNegotiated;
  /** The socket's reads, for the transmission phase to consume. */
  input: SocketInput;
}

/** Connects and negotiates structured replies, metadata contexts and the export (GO). */
export async function negotiate(opts: NbdClientOptions): Promise<NegotiatedConnection> {
  const addr = resolveTarget(opts);
  const timeoutMs = opts.handshakeTimeoutMs ?? 10_000;
  const deadline = Date.now() + timeoutMs;
  const input = new SocketInput();
  const socket = await openSocket(addr, timeoutMs, input);
  const reader = new SocketReader(socket, input);
  const timer = armHandshakeTimeout(reader, socket, timeoutMs, Math.max(1, deadline - Date.now()));
  try {
    const hs = new ClientHandshake(socket, reader);
    await hs.start();
    const wantSR = opts.structuredReplies ?? true;
    const contexts = opts.metaContexts ?? [];
    if (wantSR || contexts.length) await hs.structuredReply();
    let meta = new Map<string, number>();
    if (contexts.length) {
      if (!hs.structuredReplies) {
        throw new VmvaultError(
          'E_UNSUPPORTED',
          'NBD server does not support structured replies (block status)',
        );
      }
      meta = await hs.metaContext(addr.exportName, contexts);
    }
    const n = await hs.go(addr.exportName);
    clearTimeout(timer);
    const queue = reader.detach();
    return { socket, queue, input, negotiated: { ...n, metaContexts: meta } };
  } catch (err) {
    clearTimeout(timer);
    reader.detach();
    socket.destroy();
    throw err;
  }
}

/** Connects, runs `fn` during option haggling, then sends ABORT and closes. */
export async function withHandshake<T>(
  opts: NbdTarget & { handshakeTimeoutMs?: number },
  fn: (hs: ClientHandshake) => Promise<T>,
): Promise<T> {
  const addr = resolveTarget(opts);
  const timeoutMs = opts.handshakeTimeoutMs ?? 10_000;
  const socket = await openSocket(addr, timeoutMs);
  const reader = new SocketReader(socket);
  const timer = armHandshakeTimeout(reader, socket, timeoutMs, timeoutMs);
  try {
    const hs = new ClientHandshake(socket, reader);
    await hs.start();
    const out = await fn(hs);
    await hs.abort();
    return out;
  } finally {
    clearTimeout(timer);
    reader.detach();
    socket.destroy();
  }
}

/** After `delayMs`, fails the handshake with E_TIMEOUT (reporting `timeoutMs`) and drops the socket. */
function armHandshakeTimeout(
  reader: SocketReader,
  socket: Socket,
  timeoutMs: number,
  delayMs: number,
): NodeJS.Timeout {
  return setTimeout(() => {
    reader.fail(new VmvaultError('E_TIMEOUT', `NBD handshake timed out after ${timeoutMs} ms`));
    socket.destroy();
  }, delayMs);
}
