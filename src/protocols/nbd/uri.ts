/** NBD URIs: `nbd://host[:port]/export` and `nbd+unix:///export?socket=/path` (NBD `doc/uri.md`). */
import { VmvaultError } from '../../core/errors.js';
import { NBD_DEFAULT_PORT } from './constants.js';

/** Where an NBD server listens and which export to use. */
export interface NbdAddress {
  /** Export name ('' for the default export). */
  exportName: string;
  /** Unix socket path (for `nbd+unix://`). */
  socketPath?: string;
  /** TCP host (for `nbd://`). */
  host?: string;
  /** TCP port (default 10809). */
  port?: number;
}

function bad(uri: string, why: string): VmvaultError {
  return new VmvaultError('E_USAGE', `invalid NBD URI '${uri}': ${why}`, {
    hint: 'use nbd://host[:port]/export or nbd+unix:///export?socket=/path',
  });
}

/** Parses an NBD URI. Throws E_USAGE for anything else (including TLS schemes we do not speak). */
export function parseNbdUri(uri: string): NbdAddress {
  let u: URL;
  try {
    u = new URL(uri);
  } catch {
    throw bad(uri, 'not a URI');
  }
  const exportName = decodeURIComponent(u.pathname.replace(/^\//, ''));
  if (u.protocol === 'nbd:') {
    if (!u.hostname) throw bad(uri, 'missing host');
    const port = u.port ? Number(u.port) : NBD_DEFAULT_PORT;
    const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
    return { exportName, host, port };
  }
  if (u.protocol === 'nbd+unix:') {
    if (u.hostname) throw bad(uri, 'nbd+unix URIs have no host (use three slashes)');
    const socketPath = u.searchParams.get('socket');
    if (!socketPath) throw bad(uri, "missing '?socket=' parameter");
    return { exportName, socketPath };
  }
  if (u.protocol === 'nbds:' || u.protocol === 'nbds+unix:') throw bad(uri, 'TLS is not supported');
  throw bad(uri, `unknown scheme '${u.protocol}'`);
}

/** Formats an address as an NBD URI understood by qemu-img, nbdinfo and friends. */
export function formatNbdUri(addr: NbdAddress): string {
  const path = addr.exportName
    .split('/')
    .map((p) => encodeURIComponent(p))
    .join('/');
  if (addr.socketPath !== undefined) {
    return `nbd+unix:///${path}?socket=${encodeURIComponent(addr.socketPath).replace(/%2F/g, '/')}`;
  }
  if (addr.host === undefined) throw new VmvaultError('E_USAGE', 'NBD address needs a host or a socket path');
  const host = addr.host.includes(':') ? `[${addr.host}]` : addr.host;
  const port = addr.port !== undefined && addr.port !== NBD_DEFAULT_PORT ? `:${addr.port}` : '';
  return `nbd://${host}${port}/${path}`;
}
