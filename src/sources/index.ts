/** Public surface of `sources`: disks that backups read. */
export type { DiskSource, SourceExtent } from './disk-source.js';
export { RawFileSource } from './raw-file.js';
export { NbdSource, type NbdSourceOptions } from './nbd-source.js';
export {
  directReadsEnabled,
  type ImageInfo,
  openQemuImage,
  probeImage,
  type QemuNbdOptions,
  type QemuNbdServer,
  startQemuNbd,
} from './qemu-image-source.js';
export {
  directReadObstacle,
  type ImageSpan,
  MappedImageSource,
  mapQcow2,
  type SpanKind,
  spansFromMap,
} from './mapped-image.js';
export { openSource, type OpenSourceOptions } from './open-source.js';
