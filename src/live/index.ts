/**
 * Public surface of `live`: serving restore points over NBD for live mounts, clones and
 * recoveries (`startLiveServer`), with boot read traces (`TraceStore`).
 */
export { type LiveServer, type LiveServerOptions, startLiveServer, TRACE_SAVE_MS } from './serve.js';
export { type ReadTrace, TRACE_LIMIT, TraceRecorder, TraceStore } from './traces.js';
export { cloneBackingSpec, defaultCloneSocket, prepareCloneFile, qemuImg } from './clone-file.js';
export { MountOverlay, type OverlayFinish } from './mount-overlay.js';
