/** Public types of the filesystem readers. */
import type { BlockReader } from '../core/block-reader.js';

/** Filesystem types the probe can name. Only some of them can be opened. */
export type FsType = 'ext2' | 'ext3' | 'ext4' | 'vfat' | 'ntfs' | 'xfs' | 'lvm2' | 'swap' | 'unknown';

/** Kind of a directory entry. */
export type EntryType = 'file' | 'dir' | 'symlink' | 'other';

/** Metadata of one file, directory, symlink or special file. */
export interface FileStat {
  type: EntryType;
  /** Size in bytes (symlinks: length of the target). */
  size: number;
  /** Full POSIX mode including the file-type bits (`0o100644`...). */
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
  atime: Date;
  ctime: Date;
  nlink: number;
  /** Inode number; equal numbers mean hard links to the same file. FAT synthesises one. */
  inode: number;
}

/** A directory entry: a name plus the stat of what it points to. */
export interface DirEntry extends FileStat {
  name: string;
}

/** One run of a file's data on the volume (holes are omitted). */
export interface FileExtent {
  /** Byte offset inside the file. */
  fileOffset: number;
  /** Byte offset on the volume the filesystem was opened on. */
  diskOffset: number;
  /** Length in bytes (the last run is cut at the file size). */
  length: number;
}

/** Options of {@link Filesystem.readFile}. */
export interface ReadFileOptions {
  /** First byte to read (default 0). */
  offset?: number;
  /** Bytes to read (default: to the end of the file). */
  length?: number;
  /** Largest chunk yielded (default 1 MiB). */
  chunkSize?: number;
}

/** An entry produced by {@link Filesystem.walk}. */
export interface WalkEntry extends DirEntry {
  /** Absolute path inside the filesystem, `/`-separated. */
  path: string;
  /**
   * For regular files: the file's extents, like {@link Filesystem.extents} but without
   * resolving the path again (cheaper when indexing every file).
   */
  extents?: () => Promise<FileExtent[]>;
  /** For symlinks: the target, like {@link Filesystem.readlink} without resolving the path again. */
  readlink?: () => Promise<string>;
}

/**
 * A read-only mounted filesystem. Paths are absolute (`/etc/hosts`); intermediate symlinks are
 * followed (relative to the filesystem root), the final component never is.
 */
export interface Filesystem {
  readonly type: FsType;
  readonly label: string | undefined;
  readonly uuid: string | undefined;
  /** Block (ext) or cluster (FAT) size in bytes. */
  readonly blockSize: number;
  /** Metadata of `path` (does not follow a final symlink, like `lstat`). */
  stat(path: string): Promise<FileStat>;
  /** Entries of a directory, without `.` and `..`, in on-disk order. */
  readdir(path: string): Promise<DirEntry[]>;
  /** File content as chunks; holes read as zeros. Never loads a whole large file. */
  readFile(path: string, options?: ReadFileOptions): AsyncGenerator<Buffer>;
  /** Reads a range of a file into one buffer (at most 64 MiB). */
  read(path: string, offset: number, length: number): Promise<Buffer>;
  /** Target of a symlink. */
  readlink(path: string): Promise<string>;
  /** Where a regular file's data lives on the volume, holes omitted, in file order. */
  extents(path: string): Promise<FileExtent[]>;
  /** Extended attributes (`user.*`, `security.*`, ...), empty when the format has none. */
  xattrs(path: string): Promise<Map<string, Buffer>>;
  /** Every entry below the root, depth first, parents before children. */
  walk(): AsyncGenerator<WalkEntry>;
}

/**
 * A filesystem reader plugged into {@link openFilesystem}: detection is done once by the probe
 * (which names the type from magic numbers), the driver opens volumes of the types it lists.
 */
export interface FilesystemDriver {
  readonly types: ReadonlyArray<FsType>;
  open(reader: BlockReader): Promise<Filesystem>;
}

/** A volume found on a disk by {@link probeDisk}. */
export interface Volume {
  /** Partition number as Linux counts it (logical MBR partitions start at 5); 0 for a whole disk. */
  index: number;
  /** Byte offset on the disk. */
  start: number;
  /** Size in bytes. */
  size: number;
  type: FsType;
  label?: string;
  uuid?: string;
  /** MBR type byte as `0x83`, or GPT type GUID. */
  partitionType?: string;
  /** GPT partition name. */
  partitionName?: string;
  /** GPT unique partition GUID. */
  partitionUuid?: string;
}
