/**
 * Public surface of `files`: the file-level view of restore points (browse, read, extract)
 * and the file index built at backup time.
 */
export { PointFiles, listVolumes, volumeName, splitPath, type VolumeEntry } from './disk-tree.js';
export { indexFiles, formatChunkRanges, type FileRecord } from './file-index.js';
export { extractPaths, type ExtractTarget, type ExtractReport } from './extract.js';
export { TarWriter, type TarEntry } from './tar-writer.js';
