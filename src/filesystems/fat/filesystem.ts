/** The FAT12/16/32 reader with VFAT long names. */
import type { BlockReader } from '../../core/block-reader.js';
import { BaseFilesystem, type FsNode } from '../base-filesystem.js';
import type { FileExtent, FileStat, FsType } from '../types.js';
import { fsCorrupt } from '../util/errors.js';
import { BlockCache, readAt } from '../util/volume.js';
import { type FatBootSector, parseFatBootSector } from './boot-sector.js';
import { ATTR, type FatDirent, parseFatDirectory } from './directory.js';
import { type ClusterRun, FatTable } from './table.js';

/** Largest directory accepted: the specification's 65536 entries of 32 bytes. */
const MAX_DIR_BYTES = 65536 * 32;
const CACHE_BYTES = 4 * 1024 * 1024;
const CACHE_PAGE = 4096;
const RUN_CACHE = 256;
const DIR_CACHE = 64;

/** A FAT file or directory. */
export interface FatNode extends FsNode {
  first: number;
  /** The fixed FAT12/16 root directory. */
  fixedRoot: boolean;
}

/** A read-only FAT filesystem. Open it with {@link FatFilesystem.open}. */
export class FatFilesystem extends BaseFilesystem<FatNode> {
  readonly type: FsType = 'vfat';
  readonly label: string | undefined;
  readonly uuid: string | undefined;
  readonly blockSize: number;
  private readonly table: FatTable;
  private readonly runCache = new Map<number, ClusterRun[]>();
  private readonly dirCache = new Map<number, FatDirent[]>();
  private readonly root: FatNode;

  private constructor(
    private readonly reader: BlockReader,
    readonly boot: FatBootSector,
    label: string | undefined,
  ) {
    super();
    this.label = label;
    this.uuid = boot.volumeId;
    this.blockSize = boot.clusterSize;
    this.table = new FatTable(boot, new BlockCache(reader, CACHE_PAGE, CACHE_BYTES / CACHE_PAGE));
    const epoch = new Date(Date.UTC(1980, 0, 1));
    const fixedRoot = boot.fatType !== 32;
    this.root = {
      first: fixedRoot ? 0 : boot.rootCluster,
      fixedRoot,
      stat: {
        type: 'dir',
        size: 0,
        mode: 0o40755,
        uid: 0,
        gid: 0,
        mtime: epoch,
        atime: epoch,
        ctime: epoch,
        nlink: 1,
        inode: fixedRoot ? 1 : boot.rootCluster,
      },
    };
  }

  /** Parses the boot sector and root directory; throws `E_FS_CORRUPT` when unusable. */
  static async open(reader: BlockReader): Promise<FatFilesystem> {
    const boot = parseFatBootSector(await readAt(reader, 0, 512, 'FAT boot sector'));
    if (typeof boot === 'string') throw fsCorrupt(`not a usable FAT volume: ${boot}`);
    const bits = boot.fatType === 12 ? 1.5 : boot.fatType === 16 ? 2 : 4;
    if (boot.fatSectors * boot.bytesPerSector < Math.ceil((boot.clusterCount + 2) * bits)) {
      throw fsCorrupt('FAT is too small for the cluster count');
    }
    if (boot.fatOffset + boot.fatSectors * boot.bytesPerSector > reader.size)
      throw fsCorrupt('FAT lies past the end of the volume');
    const fs = new FatFilesystem(reader, boot, undefined);
    if (!fs.root.fixedRoot && !fs.table.isCluster(boot.rootCluster)) {
      throw fsCorrupt(`FAT32 root cluster ${boot.rootCluster} is invalid`);
    }
    const { volumeLabel } = await fs.readDir(fs.root);
    const label = volumeLabel && volumeLabel !== 'NO NAME' ? volumeLabel : boot.label;
    return label === undefined ? fs : new FatFilesystem(reader, boot, label);
  }

  private clusterOffset(c: number): number {
    return this.boot.dataOffset + (c - 2) * this.boot.clusterSize;
  }

  private async chain(first: number, maxClusters: number): Promise<ClusterRun[]> {
    const hit = this.runCache.get(first);
    if (hit) return hit;
    const runs = await this.table.runs(first, maxClusters);
    if (this.runCache.size >= RUN_CACHE) this.runCache.delete(this.runCache.keys().next().value!);
    this.runCache.set(first, runs);
    return runs;
  }

  private async readDir(dir: FatNode): Promise<{ entries: FatDirent[]; volumeLabel: string | undefined }> {
    let buf: Buffer;
    if (dir.fixedRoot) {
      buf = await readAt(this.reader, this.boot.rootDirOffset, this.boot.rootDirSize, 'FAT root directory');
    } else {
      const cs = this.boot.clusterSize;
      const runs = await this.chain(dir.first, Math.ceil(MAX_DIR_BYTES / cs));
      const parts: Buffer[] = [];
      for (const r of runs)
        parts.push(await readAt(this.reader, this.clusterOffset(r.cluster), r.count * cs, 'FAT directory'));
      buf = Buffer.concat(parts);
    }
    const entries: FatDirent[] = [];
    const { volumeLabel } = parseFatDirectory(buf, this.boot.fatType === 32, entries);
    return { entries, volumeLabel };
  }

  private async entries(dir: FatNode): Promise<FatDirent[]> {
    const hit = this.dirCache.get(dir.first);
    if (hit) return hit;
    const { entries } = await this.readDir(dir);
    if (this.dirCache.size >= DIR_CACHE) this.dirCache.delete(this.dirCache.keys().next().value!);
    this.dirCache.set(dir.first, entries);
    return entries;
  }

  private node(dir: FatNode, e: FatDirent): FatNode {
    const isDir = (e.attr & ATTR.DIRECTORY) !== 0;
    if (isDir && !this.table.isCluster(e.firstCluster)) {
      throw fsCorrupt(`directory ${e.name} starts at invalid cluster ${e.firstCluster}`);
    }
    if (!isDir && e.firstCluster !== 0 && !this.table.isCluster(e.firstCluster)) {
      throw fsCorrupt(`file ${e.name} starts at invalid cluster ${e.firstCluster}`);
    }
    // Inode numbers: the first cluster when there is one (unique per chain), otherwise a number
    // past every cluster derived from the entry's position.
    const inode =
      e.firstCluster !== 0 ? e.firstCluster : this.boot.clusterCount + 2 + (dir.first + 1) * 65536 + e.slot;
    const readOnly = (e.attr & ATTR.READ_ONLY) !== 0;
    const stat: FileStat = {
      type: isDir ? 'dir' : 'file',
      size: isDir ? 0 : e.size,
      mode: isDir ? 0o40755 : readOnly ? 0o100444 : 0o100644,
      uid: 0,
      gid: 0,
      mtime: e.mtime,
      atime: e.atime,
      ctime: e.mtime,
      nlink: 1,
      inode,
    };
    return { first: e.firstCluster, fixedRoot: false, stat };
  }

  protected async rootNode(): Promise<FatNode> {
    return this.root;
  }

  protected async lookup(dir: FatNode, name: string): Promise<FatNode | undefined> {
    const entries = await this.entries(dir);
    const e =
      entries.find((x) => x.name === name) ??
      entries.find((x) => x.name.toLowerCase() === name.toLowerCase());
    return e ? this.node(dir, e) : undefined;
  }

  protected async list(dir: FatNode): Promise<Array<{ name: string; node: FatNode }>> {
    return (await this.entries(dir)).map((e) => ({ name: e.name, node: this.node(dir, e) }));
  }

  protected async readlinkNode(): Promise<string> {
    throw fsCorrupt('FAT has no symbolic links');
  }

  private async fileRuns(node: FatNode): Promise<ClusterRun[]> {
    const cs = this.boot.clusterSize;
    const need = Math.ceil(node.stat.size / cs);
    if (need === 0) return [];
    const runs = await this.chain(node.first, need);
    const have = runs.reduce((n, r) => n + r.count, 0);
    if (have < need)
      throw fsCorrupt(`cluster chain of a ${node.stat.size}-byte file ends after ${have} clusters`);
    return runs;
  }

  protected async readNode(node: FatNode, offset: number, length: number): Promise<Buffer> {
    const cs = this.boot.clusterSize;
    const out = Buffer.alloc(length);
    const end = offset + length;
    for (const r of await this.fileRuns(node)) {
      const rs = Math.max(r.index * cs, offset);
      const re = Math.min((r.index + r.count) * cs, end);
      if (re <= rs) continue;
      const disk = this.clusterOffset(r.cluster) + (rs - r.index * cs);
      (await readAt(this.reader, disk, re - rs, 'file data')).copy(out, rs - offset);
    }
    return out;
  }

  protected async extentsNode(node: FatNode): Promise<FileExtent[]> {
    const cs = this.boot.clusterSize;
    const size = node.stat.size;
    return (await this.fileRuns(node)).map((r) => ({
      fileOffset: r.index * cs,
      diskOffset: this.clusterOffset(r.cluster),
      length: Math.min(r.count * cs, size - r.index * cs),
    }));
  }

  protected async xattrsNode(): Promise<Map<string, Buffer>> {
    return new Map();
  }
}
