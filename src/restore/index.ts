/** Public surface of `restore`: getting disks back out of restore points. */
export {
  restoreDisk,
  type RestoreOptions,
  type RestoreProgress,
  type RestoreResult,
} from './restore-disk.js';
export { PointReader, type PointReaderOptions, type PointReaderStats } from './point-reader.js';
export { PointExport } from './point-export.js';
export type { RestoreTarget } from './restore-target.js';
export { openRawTarget } from './restore-target.js';
export { openQcow2Target, qcow2ClusterSize } from './qcow2-target.js';
export {
  revertDisk,
  type RevertOptions,
  type RevertProgress,
  type RevertResult,
} from './revert.js';
