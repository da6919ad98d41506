/**
 * Public surface of `overlay`: copy-on-write overlay files for writable mounts of restore
 * points, the writable NBD export over them, and saving an overlay as a new restore point.
 */
export {
  discardOverlay,
  Overlay,
  type OverlayCounts,
  type OverlayCreateOptions,
  type OverlayIdentity,
  type OverlayOpenOptions,
} from './overlay.js';
export type { ChunkState } from './bitmap.js';
export { type OverlayBase, OverlayExport } from './overlay-export.js';
export { OverlaySource } from './overlay-source.js';
export { FROM_OVERLAY_TAG, type SaveOverlayOptions, saveOverlay } from './save.js';
export { OVERLAY_MAGIC, OVERLAY_VERSION } from './format.js';
