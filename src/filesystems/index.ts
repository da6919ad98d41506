/**
 * Public surface of `filesystems`: partition tables, volume probing and read-only filesystem
 * readers (ext2/3/4, FAT12/16/32) behind one {@link Filesystem} interface.
 */
export type {
  DirEntry,
  EntryType,
  FileExtent,
  FileStat,
  Filesystem,
  FilesystemDriver,
  FsType,
  ReadFileOptions,
  Volume,
  WalkEntry,
} from './types.js';
export type { Partition, PartitionTable } from './partitions/types.js';
export { readPartitionTable } from './partitions/table.js';
export { readMbr } from './partitions/mbr.js';
export { readGpt } from './partitions/gpt.js';
export { detectFilesystem, probeDisk, type Detected } from './probe.js';
export { DRIVERS, openFilesystem } from './open.js';
export { ExtFilesystem } from './ext/filesystem.js';
export { FatFilesystem } from './fat/filesystem.js';
export { SliceReader } from './util/volume.js';
