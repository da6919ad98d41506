/** The ext2/ext3/ext4 reader: ties superblock, group descriptors, inodes, mappings and directories together. */
import type { BlockReader } from '../../core/block-reader.js';
import { BaseFilesystem, type FsNode, MAX_DIR_ENTRIES } from '../base-filesystem.js';
import type { FileExtent, FileStat, FsType } from '../types.js';
import { u32 } from '../util/bytes.js';
import { crc32cRaw } from '../util/crc.js';
import { fsCorrupt } from '../util/errors.js';
import { BlockCache, MAX_READ, readAt } from '../util/volume.js';
import { blockMapRuns } from './block-map.js';
import { type RawDirent, hasDirTail, parseDirBlock } from './directory.js';
import { extentRuns } from './extents.js';
import { GroupDescriptors } from './group-descriptors.js';
import { INODE_FLAGS, type Inode, parseInode } from './inode.js';
import type { MapContext, Run } from './runs.js';
import {
  INCOMPAT,
  SUPERBLOCK_OFFSET,
  SUPERBLOCK_SIZE,
  type Superblock,
  extFlavour,
  parseSuperblock,
} from './superblock.js';
import { type RawXattr, blockXattrs, inodeXattrs } from './xattr.js';

/** Root directory inode number. */
export const ROOT_INO = 2;
/** Bytes of metadata blocks kept in memory per open filesystem. */
const CACHE_BYTES = 8 * 1024 * 1024;
const INODE_CACHE = 4096;
/** Parsed directory listings kept (counted in entries). */
const DIR_CACHE_ENTRIES = 200_000;
/** Largest directory accepted, in bytes. */
const MAX_DIR_BYTES = 1024 * 1024 * 1024;
/** Inodes of a directory listing loaded concurrently. */
const LIST_BATCH = 256;
/** Longest symlink target accepted. */
const MAX_SYMLINK = 65536;

/** A resolved ext inode with its stat. */
export interface ExtNode extends FsNode {
  inode: Inode;
}

/** A read-only ext2/ext3/ext4 filesystem. Open it with {@link ExtFilesystem.open}. */
export class ExtFilesystem extends BaseFilesystem<ExtNode> implements MapContext {
  readonly type: FsType;
  readonly label: string | undefined;
  readonly uuid: string | undefined;
  readonly blockSize: number;
  readonly blocksCount: number;
  readonly metadataCsum: boolean;
  private readonly cache: BlockCache;
  private readonly groups: GroupDescriptors;
  private readonly inodes = new Map<number, Inode>();
  private readonly dirs = new Map<number, RawDirent[]>();
  private dirEntriesCached = 0;

  private constructor(
    private readonly reader: BlockReader,
    readonly superblock: Superblock,
  ) {
    super();
    this.type = extFlavour(superblock);
    this.label = superblock.label;
    this.uuid = superblock.uuid;
    this.blockSize = superblock.blockSize;
    this.blocksCount = superblock.blocksCount;
    this.metadataCsum = superblock.metadataCsum;
    this.cache = new BlockCache(
      reader,
      superblock.blockSize,
      Math.max(64, CACHE_BYTES / superblock.blockSize),
    );
    this.groups = new GroupDescriptors(superblock, this.cache);
  }

  /** Reads the superblock and root directory; throws `E_FS_CORRUPT`/`E_FS_UNSUPPORTED` when unusable. */
  static async open(reader: BlockReader): Promise<ExtFilesystem> {
    const raw = await readAt(reader, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, 'ext superblock');
    const fs = new ExtFilesystem(reader, parseSuperblock(raw, reader.size));
    const root = await fs.inode(ROOT_INO);
    if (root.type !== 'dir') throw fsCorrupt('ext root inode is not a directory');
    return fs;
  }

  /** Reads metadata block `n` through the cache ({@link MapContext}). */
  metaBlock(n: number, what: string): Promise<Buffer> {
    if (!Number.isSafeInteger(n) || n < 0 || n >= this.blocksCount) {
      return Promise.reject(fsCorrupt(`${what}: block ${n} lies outside the filesystem`));
    }
    return this.cache.block(n, what);
  }

  /** Loads and decodes inode `ino`. */
  async inode(ino: number): Promise<Inode> {
    const hit = this.inodes.get(ino);
    if (hit) return hit;
    const sb = this.superblock;
    if (!Number.isInteger(ino) || ino < 1 || ino > sb.inodesCount)
      throw fsCorrupt(`inode number ${ino} is out of range`);
    const group = Math.floor((ino - 1) / sb.inodesPerGroup);
    const index = (ino - 1) % sb.inodesPerGroup;
    const gd = await this.groups.get(group);
    const offset = gd.inodeTable * sb.blockSize + index * sb.inodeSize;
    const block = await this.metaBlock(Math.floor(offset / sb.blockSize), 'inode table');
    const within = offset % sb.blockSize;
    const raw = Buffer.from(block.subarray(within, within + sb.inodeSize));
    const inode = parseInode(sb, ino, raw, offset);
    if (this.inodes.size >= INODE_CACHE) this.inodes.delete(this.inodes.keys().next().value!);
    this.inodes.set(ino, inode);
    return inode;
  }

  /** Mapped runs of an inode's data from logical block `fromBlock`. */
  runs(inode: Inode, fromBlock: number): AsyncGenerator<Run> {
    if (inode.flags & INODE_FLAGS.EXTENTS) return extentRuns(this, inode, fromBlock);
    return blockMapRuns(this, inode, fromBlock, Math.ceil(inode.size / this.blockSize));
  }

  private isInline(inode: Inode): boolean {
    return (inode.flags & INODE_FLAGS.INLINE_DATA) !== 0;
  }

  /** Data of an inline-data inode: `i_block` followed by the `system.data` attribute. */
  private inlineParts(inode: Inode): { body: Buffer; extra: RawXattr | undefined; regionOffset: number } {
    if (!(this.superblock.incompat & INCOMPAT.INLINE_DATA))
      throw fsCorrupt(`inode ${inode.ino}: inline data without the feature`);
    const { entries, regionOffset } = inodeXattrs(inode.raw);
    const extra = entries.find((e) => e.name === 'system.data');
    return { body: inode.iblock, extra, regionOffset };
  }

  private inlineData(inode: Inode): Buffer {
    const { body, extra } = this.inlineParts(inode);
    const all = extra?.value && extra.value.length > 0 ? Buffer.concat([body, extra.value]) : body;
    if (inode.type === 'dir') return all;
    if (inode.size > all.length)
      throw fsCorrupt(`inode ${inode.ino}: inline file larger than its inline area`);
    return all.subarray(0, inode.size);
  }

  /** Reads `[offset, offset+length)` of an inode's data (holes and unwritten extents as zeros). */
  async readInode(inode: Inode, offset: number, length: number): Promise<Buffer> {
    if (length > MAX_READ) throw fsCorrupt(`read of ${length} bytes is too large`);
    if (this.isInline(inode)) return Buffer.from(this.inlineData(inode).subarray(offset, offset + length));
    const bs = this.blockSize;
    const out = Buffer.alloc(length);
    const end = offset + length;
    for await (const run of this.runs(inode, Math.floor(offset / bs))) {
      const runStart = run.logical * bs;
      if (runStart >= end) break;
      if (run.uninit) continue;
      const rs = Math.max(runStart, offset);
      const re = Math.min(runStart + run.count * bs, end);
      if (re <= rs) continue;
      const data = await readAt(
        this.reader,
        run.physical * bs + (rs - runStart),
        re - rs,
        `data of inode ${inode.ino}`,
      );
      data.copy(out, rs - offset);
    }
    return out;
  }

  /** Entries of a directory inode (cached). */
  async dirEntries(inode: Inode): Promise<RawDirent[]> {
    const hit = this.dirs.get(inode.ino);
    if (hit) {
      this.dirs.delete(inode.ino);
      this.dirs.set(inode.ino, hit);
      return hit;
    }
    const out: RawDirent[] = [];
    const fileType = (this.superblock.incompat & INCOMPAT.FILETYPE) !== 0;
    const count = this.superblock.inodesCount;
    if (this.isInline(inode)) {
      const { body, extra } = this.inlineParts(inode);
      parseDirBlock(body.subarray(4), fileType, count, out);
      if (extra?.value && extra.value.length > 0) parseDirBlock(extra.value, fileType, count, out);
    } else {
      if (inode.size > MAX_DIR_BYTES)
        throw fsCorrupt(`directory inode ${inode.ino} is absurdly large (${inode.size})`);
      const bs = this.blockSize;
      const endBlock = Math.ceil(inode.size / bs);
      for await (const run of this.runs(inode, 0)) {
        if (run.uninit) continue;
        for (let i = 0; i < run.count && run.logical + i < endBlock; i++) {
          const block = await this.metaBlock(run.physical + i, `directory block of inode ${inode.ino}`);
          if (this.metadataCsum && hasDirTail(block)) {
            const got = crc32cRaw(inode.csumSeed, block.subarray(0, bs - 12));
            if (got !== u32(block, bs - 4))
              throw fsCorrupt(`directory inode ${inode.ino}: block checksum mismatch`);
          }
          parseDirBlock(block, fileType, count, out);
          if (out.length > MAX_DIR_ENTRIES)
            throw fsCorrupt(`directory inode ${inode.ino} has too many entries`);
        }
        if (run.logical + run.count >= endBlock) break;
      }
    }
    if (out.length <= DIR_CACHE_ENTRIES) {
      while (this.dirEntriesCached + out.length > DIR_CACHE_ENTRIES && this.dirs.size > 0) {
        const [k, v] = this.dirs.entries().next().value!;
        this.dirs.delete(k);
        this.dirEntriesCached -= v.length;
      }
      this.dirs.set(inode.ino, out);
      this.dirEntriesCached += out.length;
    }
    return out;
  }

  private node(inode: Inode): ExtNode {
    const stat: FileStat = {
      type: inode.type,
      size: inode.size,
      mode: inode.mode,
      uid: inode.uid,
      gid: inode.gid,
      mtime: inode.mtime,
      atime: inode.atime,
      ctime: inode.ctime,
      nlink: inode.links,
      inode: inode.ino,
    };
    return { stat, inode };
  }

  protected async rootNode(): Promise<ExtNode> {
    return this.node(await this.inode(ROOT_INO));
  }

  protected async lookup(dir: ExtNode, name: string): Promise<ExtNode | undefined> {
    const hit = (await this.dirEntries(dir.inode)).find((e) => e.name === name);
    return hit ? this.node(await this.inode(hit.ino)) : undefined;
  }

  protected async list(dir: ExtNode): Promise<Array<{ name: string; node: ExtNode }>> {
    const entries = await this.dirEntries(dir.inode);
    const out: Array<{ name: string; node: ExtNode }> = [];
    // The inodes of a batch are loaded together: the inode-table blocks they need are fetched
    // concurrently (one request per distinct block, shared by the cache) instead of one by one.
    for (let i = 0; i < entries.length; i += LIST_BATCH) {
      const batch = entries.slice(i, i + LIST_BATCH);
      const inodes = await Promise.all(batch.map((e) => this.inode(e.ino)));
      for (let k = 0; k < batch.length; k++) out.push({ name: batch[k]!.name, node: this.node(inodes[k]!) });
    }
    return out;
  }

  protected async readlinkNode(node: ExtNode): Promise<string> {
    const inode = node.inode;
    if (inode.size > MAX_SYMLINK) throw fsCorrupt(`symlink inode ${inode.ino} is too long (${inode.size})`);
    if (this.isInline(inode)) return this.inlineData(inode).toString('utf8');
    const eaBlocks = inode.fileAcl ? this.blockSize / 512 : 0;
    if (inode.size < 60 && inode.blocks512 - eaBlocks <= 0)
      return inode.iblock.subarray(0, inode.size).toString('utf8');
    return (await this.readInode(inode, 0, inode.size)).toString('utf8');
  }

  protected readNode(node: ExtNode, offset: number, length: number): Promise<Buffer> {
    return this.readInode(node.inode, offset, length);
  }

  protected async extentsNode(node: ExtNode): Promise<FileExtent[]> {
    const inode = node.inode;
    if (this.isInline(inode)) {
      const { extra, regionOffset } = this.inlineParts(inode);
      const out: FileExtent[] = [];
      const first = Math.min(inode.size, 60);
      if (first > 0) out.push({ fileOffset: 0, diskOffset: inode.diskOffset + 0x28, length: first });
      if (inode.size > 60 && extra) {
        out.push({
          fileOffset: 60,
          diskOffset: inode.diskOffset + regionOffset + extra.valueOffset,
          length: inode.size - 60,
        });
      }
      return out;
    }
    const bs = this.blockSize;
    const out: FileExtent[] = [];
    for await (const run of this.runs(inode, 0)) {
      const fileOffset = run.logical * bs;
      if (fileOffset >= inode.size) break;
      if (run.uninit) continue;
      const length = Math.min(run.count * bs, inode.size - fileOffset);
      const last = out[out.length - 1];
      if (
        last &&
        last.fileOffset + last.length === fileOffset &&
        last.diskOffset + last.length === run.physical * bs
      ) {
        last.length += length;
      } else {
        out.push({ fileOffset, diskOffset: run.physical * bs, length });
      }
    }
    return out;
  }

  protected async xattrsNode(node: ExtNode): Promise<Map<string, Buffer>> {
    const inode = node.inode;
    const all: RawXattr[] = [...inodeXattrs(inode.raw).entries];
    if (inode.fileAcl) {
      const block = await this.metaBlock(inode.fileAcl, `xattr block of inode ${inode.ino}`);
      if (this.metadataCsum) this.verifyXattrBlock(block, inode.fileAcl);
      all.push(...blockXattrs(block));
    }
    const out = new Map<string, Buffer>();
    for (const x of all) {
      if (x.name === 'system.data') continue;
      let value = x.value;
      if (value === undefined) {
        const ea = await this.inode(x.valueInode);
        if (!(ea.flags & INODE_FLAGS.EA_INODE) || ea.size < x.valueSize) {
          throw fsCorrupt(`xattr ${x.name} points to inode ${x.valueInode} that is not a value inode`);
        }
        value = await this.readInode(ea, 0, x.valueSize);
      }
      out.set(x.name, Buffer.from(value));
    }
    return out;
  }

  private verifyXattrBlock(block: Buffer, n: number): void {
    const copy = Buffer.from(block);
    copy.writeUInt32LE(0, 0x10);
    const num = Buffer.alloc(8);
    num.writeBigUInt64LE(BigInt(n));
    const got = crc32cRaw(crc32cRaw(this.superblock.csumSeed, num), copy);
    if (got !== u32(block, 0x10)) throw fsCorrupt(`xattr block ${n} checksum mismatch`);
  }
}
