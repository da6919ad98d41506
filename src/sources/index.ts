/** Public surface of `sources`: disks that backups read. */
export type { DiskSource, SourceExtent } from './disk-source.js';
export { RawFileSource } from './raw-file.js';
export { openSource } from './open-source.js';
