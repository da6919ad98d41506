/**
 * Format-independent half of a {@link Filesystem}: path resolution with symlink following, chunked
 * reads, the walk with loop detection, and mapping of unexpected exceptions to `E_FS_CORRUPT`.
 */
import { VmvaultError } from '../core/errors.js';
import type {
  DirEntry,
  FileExtent,
  FileStat,
  Filesystem,
  FsType,
  ReadFileOptions,
  WalkEntry,
} from './types.js';
import { asFsError, fsCorrupt, fsNotFound, guard } from './util/errors.js';
import { joinPath, splitPath } from './util/path.js';
import { MAX_READ } from './util/volume.js';

/** Most symlinks followed while resolving one path (Linux uses 40 as well). */
export const MAX_SYMLINK_HOPS = 40;
/** Most entries one directory may have before it is treated as hostile. */
export const MAX_DIR_ENTRIES = 4_000_000;
/** Default chunk size of {@link Filesystem.readFile}. */
export const DEFAULT_CHUNK = 1024 * 1024;

/** What the base class needs from a format: a node is anything carrying a stat. */
export interface FsNode {
  stat: FileStat;
}

/** Base class of the format readers; subclasses implement the node-level operations. */
export abstract class BaseFilesystem<N extends FsNode> implements Filesystem {
  abstract readonly type: FsType;
  abstract readonly label: string | undefined;
  abstract readonly uuid: string | undefined;
  abstract readonly blockSize: number;

  protected abstract rootNode(): Promise<N>;
  protected abstract lookup(dir: N, name: string): Promise<N | undefined>;
  protected abstract list(dir: N): Promise<Array<{ name: string; node: N }>>;
  protected abstract readlinkNode(node: N): Promise<string>;
  protected abstract extentsNode(node: N): Promise<FileExtent[]>;
  /** Reads `[offset, offset+length)` of a regular file; the range is inside the file. */
  protected abstract readNode(node: N, offset: number, length: number): Promise<Buffer>;
  protected abstract xattrsNode(node: N): Promise<Map<string, Buffer>>;

  /** Resolves a path to a node; intermediate symlinks are followed, the last one only if asked. */
  protected async resolve(path: string, followLast = false): Promise<N> {
    const root = await this.rootNode();
    let hops = 0;
    const stack: N[] = [root];
    let pending = splitPath(path);
    while (pending.length > 0) {
      const name = pending.shift()!;
      const dir = stack[stack.length - 1]!;
      if (name === '..') {
        if (stack.length > 1) stack.pop();
        continue;
      }
      if (dir.stat.type !== 'dir') throw new VmvaultError('E_NOT_FOUND', `not a directory in path: ${path}`);
      const child = await this.lookup(dir, name);
      if (!child) throw fsNotFound(path);
      if (child.stat.type === 'symlink' && (pending.length > 0 || followLast)) {
        if (++hops > MAX_SYMLINK_HOPS) throw fsCorrupt(`too many levels of symbolic links in ${path}`);
        const target = await this.readlinkNode(child);
        if (target.startsWith('/')) stack.splice(1);
        pending = [...splitPath(target), ...pending];
        continue;
      }
      stack.push(child);
    }
    return stack[stack.length - 1]!;
  }

  stat(path: string): Promise<FileStat> {
    return guard(`stat ${path}`, async () => ({ ...(await this.resolve(path)).stat }));
  }

  readdir(path: string): Promise<DirEntry[]> {
    return guard(`readdir ${path}`, async () => {
      const dir = await this.resolve(path, true);
      if (dir.stat.type !== 'dir') throw new VmvaultError('E_USAGE', `not a directory: ${path}`);
      return (await this.list(dir)).map(({ name, node }) => ({ name, ...node.stat }));
    });
  }

  readlink(path: string): Promise<string> {
    return guard(`readlink ${path}`, async () => {
      const node = await this.resolve(path);
      if (node.stat.type !== 'symlink') throw new VmvaultError('E_USAGE', `not a symbolic link: ${path}`);
      return this.readlinkNode(node);
    });
  }

  extents(path: string): Promise<FileExtent[]> {
    return guard(`extents ${path}`, async () => {
      const node = await this.resolve(path, true);
      if (node.stat.type !== 'file') throw new VmvaultError('E_USAGE', `not a regular file: ${path}`);
      return this.extentsNode(node);
    });
  }

  xattrs(path: string): Promise<Map<string, Buffer>> {
    return guard(`xattrs ${path}`, async () => this.xattrsNode(await this.resolve(path)));
  }

  read(path: string, offset: number, length: number): Promise<Buffer> {
    return guard(`read ${path}`, async () => {
      if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
        throw new VmvaultError('E_USAGE', `bad range ${offset}+${length}`);
      }
      if (length > MAX_READ)
        throw new VmvaultError('E_USAGE', `read of ${length} bytes is too large; use readFile`);
      const node = await this.resolveFile(path);
      const end = Math.min(node.stat.size, offset + length);
      if (end <= offset) return Buffer.alloc(0);
      return this.readNode(node, offset, end - offset);
    });
  }

  async *readFile(path: string, options: ReadFileOptions = {}): AsyncGenerator<Buffer> {
    const chunk = Math.max(4096, Math.min(options.chunkSize ?? DEFAULT_CHUNK, MAX_READ));
    const node = await guard(`readFile ${path}`, () => this.resolveFile(path));
    const start = options.offset ?? 0;
    const end = Math.min(
      node.stat.size,
      options.length === undefined ? Number.MAX_SAFE_INTEGER : start + options.length,
    );
    for (let pos = start; pos < end; ) {
      const n = Math.min(chunk, end - pos);
      let buf: Buffer;
      try {
        buf = await this.readNode(node, pos, n);
      } catch (err) {
        throw asFsError(err, `readFile ${path}`);
      }
      yield buf;
      pos += n;
    }
  }

  async *walk(): AsyncGenerator<WalkEntry> {
    const root = await guard('walk', () => this.rootNode());
    const seen = new Set<number>([root.stat.inode]);
    const stack: Array<{ path: string; node: N }> = [{ path: '/', node: root }];
    while (stack.length > 0) {
      const { path, node } = stack.pop()!;
      const entries = await guard(`walk ${path}`, () => this.list(node));
      const subdirs: Array<{ path: string; node: N }> = [];
      for (const { name, node: child } of entries) {
        const childPath = joinPath(path, name);
        if (child.stat.type === 'dir') {
          if (seen.has(child.stat.inode)) {
            throw fsCorrupt(`directory loop: ${childPath} is already reachable elsewhere`, {
              path: childPath,
            });
          }
          seen.add(child.stat.inode);
          subdirs.push({ path: childPath, node: child });
        }
        const entry: WalkEntry = { path: childPath, name, ...child.stat };
        if (child.stat.type === 'file')
          entry.extents = () => guard(`extents ${childPath}`, () => this.extentsNode(child));
        else if (child.stat.type === 'symlink')
          entry.readlink = () => guard(`readlink ${childPath}`, () => this.readlinkNode(child));
        yield entry;
      }
      for (let i = subdirs.length - 1; i >= 0; i--) stack.push(subdirs[i]!);
    }
  }

  private async resolveFile(path: string): Promise<N> {
    const node = await this.resolve(path, true);
    if (node.stat.type !== 'file') throw new VmvaultError('E_USAGE', `not a regular file: ${path}`);
    return node;
  }
}
