/**
 * A repository in a local directory. Writes go to a temporary file that is fsynced and renamed
 * into place, then the directory is fsynced, so a crash leaves either the old state or the new.
 */
import { randomBytes } from 'node:crypto';
import { type FileHandle, mkdir, open, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { directWriteFlags, VmvaultError, errnoCode, writeStaged } from '../core/index.js';
import type { Backend, ObjectInfo, ReadDescriptor } from './backend.js';

const TMP_MARK = '.tmp-';
/** Durable objects at least this large (packs) are written with O_DIRECT (core/direct-io.ts). */
const DIRECT_MIN_BYTES = 1 << 20;
const MAX_OPEN_FILES = 64;

/** An open read handle shared by concurrent reads of one object. */
interface CachedHandle {
  fh: Promise<FileHandle>;
  users: number;
  /** Removed from the cache while in use: close when the last user is done. */
  evicted: boolean;
}

/** {@link Backend} over a local directory. */
export class LocalBackend implements Backend {
  private readonly handles = new Map<string, CachedHandle>();
  private readonly knownDirs = new Set<string>();
  /** The filesystem refused O_DIRECT once: write through the page cache from then on. */
  private directRefused = false;

  constructor(readonly root: string) {}

  get location(): string {
    return this.root;
  }

  private path(name: string): string {
    return join(this.root, name);
  }

  async read(name: string): Promise<Buffer> {
    // Whole objects (index segments, manifests) are read once: no cached handle.
    try {
      return await readFile(this.path(name));
    } catch (err) {
      throw this.openError(name, err);
    }
  }

  async readRange(name: string, offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length);
    await this.readRangeInto(name, offset, buf);
    return buf;
  }

  async readRangeInto(name: string, offset: number, target: Buffer): Promise<void> {
    const h = this.acquire(name);
    try {
      await this.fill(await h.fh, name, offset, target);
    } finally {
      this.releaseHandle(h);
    }
  }

  async openRead(name: string): Promise<ReadDescriptor> {
    const h = this.acquire(name);
    let fh: FileHandle;
    try {
      fh = await h.fh;
    } catch (err) {
      this.releaseHandle(h);
      throw err;
    }
    let released = false;
    return {
      fd: fh.fd,
      release: () => {
        if (released) return;
        released = true;
        this.releaseHandle(h);
      },
    };
  }

  private async fill(fh: FileHandle, name: string, offset: number, buf: Buffer): Promise<void> {
    const length = buf.length;
    let done = 0;
    while (done < length) {
      const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) {
        throw new VmvaultError('E_CORRUPT', `${name} is truncated: wanted ${length} bytes at ${offset}`, {
          details: { object: name, offset, length },
        });
      }
      done += bytesRead;
    }
  }

  private openError(name: string, err: unknown): VmvaultError {
    if (errnoCode(err) === 'ENOENT') {
      return new VmvaultError('E_NOT_FOUND', `${name} does not exist in ${this.root}`, {
        details: { object: name },
      });
    }
    return new VmvaultError('E_IO', `cannot open ${this.path(name)}: ${(err as Error).message}`, {
      cause: err,
    });
  }

  /**
   * A cached read handle with one more user. Handles stay open for later reads (packs are read
   * many times); past MAX_OPEN_FILES the least recently used idle ones are closed — never one
   * that a read is still using.
   */
  private acquire(name: string): CachedHandle {
    let h = this.handles.get(name);
    if (h) {
      this.handles.delete(name); // refresh LRU position
    } else {
      const fh = open(this.path(name), 'r').catch((err: unknown) => {
        if (this.handles.get(name) === h) this.handles.delete(name);
        throw this.openError(name, err);
      });
      fh.catch(() => {});
      h = { fh, users: 0, evicted: false };
    }
    this.handles.set(name, h);
    h.users++;
    if (this.handles.size > MAX_OPEN_FILES) {
      for (const [k, v] of this.handles) {
        if (this.handles.size <= MAX_OPEN_FILES) break;
        if (v.users > 0) continue;
        this.handles.delete(k);
        v.fh.then((f) => f.close()).catch(() => {});
      }
    }
    return h;
  }

  private releaseHandle(h: CachedHandle): void {
    h.users--;
    if (h.users === 0 && h.evicted) h.fh.then((f) => f.close()).catch(() => {});
  }

  async write(
    name: string,
    data: Uint8Array | readonly Uint8Array[],
    opts: { durable?: boolean } = {},
  ): Promise<void> {
    const durable = opts.durable !== false;
    const final = this.path(name);
    const dir = dirname(final);
    if (!this.knownDirs.has(dir)) {
      await mkdir(dir, { recursive: true });
      this.knownDirs.add(dir);
    }
    const tmp = `${final}${TMP_MARK}${randomBytes(6).toString('hex')}`;
    const fh = await open(tmp, 'wx');
    try {
      const parts = data instanceof Uint8Array ? [data] : data;
      if (!(durable && (await this.writeDirect(tmp, fh, parts)))) await fh.writev(parts as Uint8Array[]);
      if (durable) await fh.sync();
    } catch (err) {
      await fh.close().catch(() => {});
      await unlink(tmp).catch(() => {});
      throw new VmvaultError('E_IO', `cannot write ${final}: ${(err as Error).message}`, { cause: err });
    }
    await fh.close();
    await rename(tmp, final);
    if (durable) await syncDir(dir);
  }

  /**
   * Writes a large new object through O_DIRECT (no page-cache copy; see core/direct-io.ts).
   * False, with nothing written, when the object is small or direct I/O is not possible here.
   */
  private async writeDirect(tmp: string, fh: FileHandle, parts: readonly Uint8Array[]): Promise<boolean> {
    let total = 0;
    for (const p of parts) total += p.length;
    const flags = this.directRefused ? null : directWriteFlags();
    if (total < DIRECT_MIN_BYTES || flags === null) return false;
    let direct: FileHandle;
    try {
      direct = await open(tmp, flags);
    } catch {
      this.directRefused = true; // EINVAL: this filesystem has no O_DIRECT
      return false;
    }
    try {
      if (!(await writeStaged(fh.fd, direct.fd, parts))) this.directRefused = true;
    } finally {
      await direct.close();
    }
    return true;
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    const names = await this.listNames(prefix);
    const infos = await Promise.all(names.map((n) => this.stat(n).catch(() => null)));
    return infos.filter((o): o is ObjectInfo => o !== null);
  }

  async listNames(prefix: string): Promise<string[]> {
    const out: string[] = [];
    const walk = async (rel: string): Promise<void> => {
      let entries: import('node:fs').Dirent[];
      try {
        entries = await readdir(this.path(rel), { withFileTypes: true });
      } catch (err) {
        if (errnoCode(err) === 'ENOENT') return;
        throw err;
      }
      for (const e of entries) {
        if (e.isDirectory()) await walk(`${rel}/${e.name}`);
        else if (e.isFile() && !e.name.includes(TMP_MARK)) out.push(`${rel}/${e.name}`);
      }
    };
    await walk(prefix);
    return out;
  }

  async stat(name: string): Promise<ObjectInfo | null> {
    try {
      const st = await stat(this.path(name));
      return { name, size: st.size, mtimeMs: st.mtimeMs };
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return null;
      throw err;
    }
  }

  async remove(name: string): Promise<void> {
    const h = this.handles.get(name);
    if (h) {
      this.handles.delete(name);
      if (h.users === 0) await h.fh.then((fh) => fh.close()).catch(() => {});
      else h.evicted = true;
    }
    try {
      await unlink(this.path(name));
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
    }
  }

  /** Removes temporary files that a crashed writer left behind. */
  async removeStaleTemporaries(prefix: string, olderThanMs: number): Promise<number> {
    let n = 0;
    const walk = async (rel: string): Promise<void> => {
      let entries: import('node:fs').Dirent[];
      try {
        entries = await readdir(this.path(rel), { withFileTypes: true });
      } catch {
        return;
      }
      for (const e of entries) {
        const childRel = `${rel}/${e.name}`;
        if (e.isDirectory()) await walk(childRel);
        else if (e.name.includes(TMP_MARK)) {
          const st = await stat(this.path(childRel)).catch(() => null);
          if (st && Date.now() - st.mtimeMs > olderThanMs) {
            await unlink(this.path(childRel)).catch(() => {});
            n++;
          }
        }
      }
    };
    await walk(prefix);
    return n;
  }

  async close(): Promise<void> {
    const all = [...this.handles.values()];
    this.handles.clear();
    await Promise.all(all.map((h) => h.fh.then((fh) => fh.close()).catch(() => {})));
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
