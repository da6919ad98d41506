/**
 * Typed wrappers for QEMU's built-in NBD server and block exports (qapi/block-export.json).
 */
import type { NbdExportArgs, NbdServerAddress } from './block-types.js';
import type { QmpEvent } from './messages.js';
import type { QmpClient } from './qmp-client.js';

/**
 * `nbd-server-start`: starts the (single) NBD server. `addr` is a unix socket path, or a TCP
 * host and port (the port goes on the wire as a string, as `SocketAddressLegacy` requires).
 */
export async function nbdServerStart(
  qmp: QmpClient,
  addr: { path: string } | { host: string; port: number | string },
  options: { maxConnections?: number; tlsCreds?: string } = {},
): Promise<void> {
  const wire: NbdServerAddress =
    'path' in addr
      ? { type: 'unix', data: { path: addr.path } }
      : { type: 'inet', data: { host: addr.host, port: String(addr.port) } };
  const args: Record<string, unknown> = { addr: wire };
  if (options.maxConnections !== undefined) args['max-connections'] = options.maxConnections;
  if (options.tlsCreds !== undefined) args['tls-creds'] = options.tlsCreds;
  await qmp.execute('nbd-server-start', args);
}

/** `nbd-server-stop`: stops the NBD server and removes every NBD export it serves. */
export async function nbdServerStop(qmp: QmpClient): Promise<void> {
  await qmp.execute('nbd-server-stop');
}

/** `block-export-add` with `type: "nbd"`. */
export async function blockExportAdd(qmp: QmpClient, args: NbdExportArgs): Promise<void> {
  await qmp.execute('block-export-add', { type: 'nbd', ...args });
}

/**
 * `block-export-del`, then waits for `BLOCK_EXPORT_DELETED` with the export's id (the export
 * lingers while NBD clients stay connected; `mode: 'hard'` disconnects them). Returns the event.
 */
export async function blockExportDel(
  qmp: QmpClient,
  id: string,
  options: { mode?: 'safe' | 'hard'; timeoutMs?: number } = {},
): Promise<QmpEvent> {
  const args: Record<string, unknown> = { id };
  if (options.mode) args.mode = options.mode;
  return qmp.executeAndWait(
    'block-export-del',
    args,
    'BLOCK_EXPORT_DELETED',
    (e) => e.data.id === id,
    options.timeoutMs ?? 30_000,
  );
}

/** One entry of `query-block-exports`. */
export interface BlockExportInfo {
  id: string;
  type: string;
  'node-name': string;
  'shutting-down': boolean;
  [key: string]: unknown;
}

/** `query-block-exports`. */
export function queryBlockExports(qmp: QmpClient): Promise<BlockExportInfo[]> {
  return qmp.execute<BlockExportInfo[]>('query-block-exports');
}
