/** Public surface of `core`: errors, small shared interfaces and helpers. */
export { VmvaultError, isVmvaultError, errnoCode, type ErrorCode } from './errors.js';
export type { BlockReader, Extent } from './block-reader.js';
export { formatBytes, formatDuration, parseBytes } from './units.js';
export { copyBytes, nativeAddon, type NativeAddon, SEEK_DATA, SEEK_HOLE, SEEK_END } from './native.js';
export {
  DIRECT_ALIGN,
  alignedBuffer,
  closeDirect,
  directWriteFlags,
  openDirect,
  StagedWriter,
  StagePool,
  writeAlignedAsync,
  writeStaged,
} from './direct-io.js';
export { SlabPool, type Slab } from './slab-pool.js';
export { CachedBlockReader } from './cached-reader.js';
export { removeStaleSocket } from './unix-socket.js';
