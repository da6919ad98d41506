/**
 * Socket helpers shared by the QMP and guest-agent clients: bounded connects to a unix socket or
 * a TCP address, with retries while the server is starting.
 */
import { connect, type Socket } from 'node:net';
import { VmvaultError } from '../../core/errors.js';

/** Where a QMP or guest-agent server listens: a unix socket path or a TCP host and port. */
export type SocketAddress = { path: string } | { host: string; port: number };

/** Human-readable form of an address, for messages. */
export function describeAddress(addr: SocketAddress): string {
  return 'path' in addr ? `unix:${addr.path}` : `tcp:${addr.host}:${addr.port}`;
}

/** Errnos that mean "nothing listens there yet": worth retrying while a server starts. */
const RETRYABLE = new Set(['ENOENT', 'ECONNREFUSED', 'EAGAIN']);

/**
 * Opens a stream socket to `addr`, failing with `E_TIMEOUT` after `timeoutMs`. With
 * `retryUntilMs` > 0, refused or missing sockets are retried every 50 ms until that many
 * milliseconds have passed (useful right after starting or restarting QEMU).
 */
export async function openSocket(
  addr: SocketAddress,
  options: { timeoutMs?: number; retryUntilMs?: number } = {},
): Promise<Socket> {
  const timeoutMs = options.timeoutMs ?? 5000;
  const deadline = Date.now() + (options.retryUntilMs ?? 0);
  for (;;) {
    try {
      return await connectOnce(addr, timeoutMs);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (typeof code === 'string' && RETRYABLE.has(code) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      if (err instanceof VmvaultError) throw err;
      throw new VmvaultError(
        'E_IO',
        `cannot connect to ${describeAddress(addr)}: ${(err as Error).message}`,
        {
          cause: err,
          details: { address: describeAddress(addr), errno: code },
        },
      );
    }
  }
}

function connectOnce(addr: SocketAddress, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock =
      'path' in addr ? connect({ path: addr.path }) : connect({ host: addr.host, port: addr.port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(
        new VmvaultError(
          'E_TIMEOUT',
          `connect to ${describeAddress(addr)}: no answer within ${timeoutMs} ms`,
        ),
      );
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.removeAllListeners('error');
      resolve(sock);
    });
    sock.once('error', (err) => {
      clearTimeout(timer);
      sock.destroy();
      reject(err);
    });
  });
}
