/**
 * Public surface of the NBD protocol library: a client ({@link NbdClient}, {@link NbdMultiClient}),
 * a server ({@link NbdServer}) with the {@link NbdExport} interface and two exports, URI helpers
 * and every protocol constant.
 */
export * from './constants.js';
export {
  NbdClient,
  type NbdClientOptions,
  type NbdExtent,
  type NbdWriteOptions,
  type NbdWriteZeroesOptions,
} from './client.js';
export { NbdMultiClient, type NbdMultiClientOptions } from './multi-conn.js';
export type { NbdBlockSize, NbdListedExport } from './handshake-client.js';
export type { NbdTarget } from './connect.js';
export { NbdServer, type NbdServerOptions, type NbdListenOptions, type NbdListenAddress } from './server.js';
export type {
  AllocationExtent,
  HeldSegments,
  NbdExport,
  NbdExportBlockSize,
  ReadSegment,
} from './export.js';
export { MemoryExport } from './memory-export.js';
export { FileExport, type FileExportOptions, loadNativeSeek } from './file-export.js';
export { parseNbdUri, formatNbdUri, type NbdAddress } from './uri.js';
export { nbdErrnoName, errorToNbdErrno } from './errors.js';
