/** Opening a socket to an NBD server (TCP or unix) with a deadline. */
import { type Socket, connect as netConnect } from 'node:net';
import { VmvaultError } from '../../core/errors.js';
import { NBD_DEFAULT_PORT } from './constants.js';
import type { SocketInput } from './socket-input.js';
import { type NbdAddress, parseNbdUri } from './uri.js';

/** Where to connect: a URI, a unix socket path, or a TCP host/port. */
export interface NbdTarget {
  /** `nbd://host[:port]/export` or `nbd+unix:///export?socket=/path`; overrides the fields below. */
  uri?: string;
  socketPath?: string;
  host?: string;
  port?: number;
  /** Export name ('' = default export). */
  exportName?: string;
}

/** Resolves a target to a concrete address. */
export function resolveTarget(t: NbdTarget): NbdAddress {
  if (t.uri !== undefined) {
    const a = parseNbdUri(t.uri);
    return t.exportName !== undefined ? { ...a, exportName: t.exportName } : a;
  }
  if (t.socketPath !== undefined) return { exportName: t.exportName ?? '', socketPath: t.socketPath };
  return { exportName: t.exportName ?? '', host: t.host ?? '127.0.0.1', port: t.port ?? NBD_DEFAULT_PORT };
}

/**
 * Connects a socket; rejects with E_TIMEOUT after `timeoutMs` or E_IO when refused. With `input`
 * the socket reads through it (`onread`) instead of emitting 'data'.
 */
export function openSocket(addr: NbdAddress, timeoutMs: number, input?: SocketInput): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const where = addr.socketPath ?? `${addr.host}:${addr.port}`;
    const onread = input ? { onread: input.onread } : {};
    const sock =
      addr.socketPath !== undefined
        ? netConnect({ path: addr.socketPath, ...onread })
        : netConnect({ host: addr.host ?? '127.0.0.1', port: addr.port ?? NBD_DEFAULT_PORT, ...onread });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new VmvaultError('E_TIMEOUT', `timed out connecting to NBD server at ${where}`));
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.off('error', onError);
      sock.setNoDelay(true);
      resolve(sock);
    });
    const onError = (err: Error): void => {
      clearTimeout(timer);
      reject(
        new VmvaultError('E_IO', `cannot connect to NBD server at ${where}: ${err.message}`, {
          cause: err,
          hint: 'check that the NBD server is running and the address is right',
        }),
      );
    };
    sock.once('error', onError);
  });
}
