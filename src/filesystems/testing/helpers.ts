/** Test helpers: a file-backed BlockReader, tool runners and a source-tree comparison. Tests only. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstatSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BlockReader } from '../../core/block-reader.js';
import type { Filesystem } from '../types.js';

/** A BlockReader over a file, optionally a window of it. */
export class FileReader implements BlockReader {
  private constructor(
    private readonly fh: FileHandle,
    readonly size: number,
  ) {}
  static async open(path: string): Promise<FileReader> {
    const fh = await open(path, 'r');
    return new FileReader(fh, (await fh.stat()).size);
  }
  async read(offset: number, length: number): Promise<Buffer> {
    if (offset < 0 || offset + length > this.size)
      throw new RangeError(`read ${offset}+${length} past ${this.size}`);
    const buf = Buffer.alloc(length);
    const { bytesRead } = await this.fh.read(buf, 0, length, offset);
    if (bytesRead !== length) throw new Error('short read');
    return buf;
  }
  close(): Promise<void> {
    return this.fh.close();
  }
}

/** A BlockReader over an in-memory buffer. */
export class MemoryReader implements BlockReader {
  constructor(readonly data: Buffer) {}
  get size(): number {
    return this.data.length;
  }
  async read(offset: number, length: number): Promise<Buffer> {
    if (offset < 0 || offset + length > this.data.length) throw new RangeError('read past end');
    return Buffer.from(this.data.subarray(offset, offset + length));
  }
}

/** Runs a command, failing the test with its stderr when it fails. */
export function run(cmd: string, args: string[], env: Record<string, string> = {}): string {
  try {
    return execFileSync(cmd, args, {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, TZ: 'UTC', ...env },
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.stderr ?? e.message}`);
  }
}

/** A fresh temporary directory and its cleanup. */
export function tempDir(prefix: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `vmvault-${prefix}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Reads a whole file from the filesystem reader. */
export async function readAll(fs: Filesystem, path: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of fs.readFile(path, { chunkSize: 65536 })) parts.push(chunk);
  return Buffer.concat(parts);
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Options of {@link compareTree}. */
export interface CompareOptions {
  /** Compare mode, uid and gid (ext). */
  ownership?: boolean;
  /** Allowed mtime difference in ms (FAT stores 2-second steps). */
  mtimeSlackMs?: number;
  /** Paths present only in the image (lost+found). */
  ignore?: string[];
  /** The image file, to check that extents() points at the file's bytes. */
  image?: string;
  imageOffset?: number;
}

/**
 * Checks every entry of `src` against the filesystem: type, size, mode/uid/gid, mtime, content,
 * symlink target, hard-link identity, and that walk() lists exactly the same paths.
 */
export async function compareTree(fs: Filesystem, src: string, opts: CompareOptions = {}): Promise<number> {
  const inodeMap = new Map<number, number>();
  const expected = new Set<string>();
  const image = opts.image ? readFileSync(opts.image) : undefined;
  let checked = 0;
  const visit = async (rel: string) => {
    for (const name of readdirSync(join(src, rel))) {
      const r = `${rel}/${name}`;
      const p = join(src, r);
      const st = lstatSync(p);
      expected.add(r);
      const got = await fs.stat(r);
      const type = st.isFile()
        ? 'file'
        : st.isDirectory()
          ? 'dir'
          : st.isSymbolicLink()
            ? 'symlink'
            : 'other';
      assert.equal(got.type, type, `type of ${r}`);
      if (type === 'file' || type === 'symlink') assert.equal(got.size, st.size, `size of ${r}`);
      if (opts.ownership) {
        assert.equal(got.mode, st.mode, `mode of ${r}`);
        assert.equal(got.uid, st.uid, `uid of ${r}`);
        assert.equal(got.gid, st.gid, `gid of ${r}`);
        assert.equal(got.nlink, st.nlink, `nlink of ${r}`);
      }
      const slack = opts.mtimeSlackMs ?? 0;
      if (type !== 'symlink' && type !== 'dir') {
        // Tools copy whole seconds (mkfs.ext4 -d) or 2-second steps (FAT).
        const want = Math.floor(st.mtimeMs / 1000) * 1000;
        const diff = Math.abs(got.mtime.getTime() - want);
        assert.ok(diff <= slack, `mtime of ${r}: ${got.mtime.toISOString()} vs ${st.mtime.toISOString()}`);
      }
      if (type === 'file') {
        const want = readFileSync(p);
        assert.equal(sha(await readAll(fs, r)), sha(want), `content of ${r}`);
        if (want.length > 10) {
          const mid = Math.floor(want.length / 3);
          assert.deepEqual(await fs.read(r, mid, 7), want.subarray(mid, mid + 7), `ranged read of ${r}`);
        }
        if (image) {
          const rebuilt = Buffer.alloc(want.length);
          for (const e of await fs.extents(r)) {
            const at = (opts.imageOffset ?? 0) + e.diskOffset;
            image.copy(rebuilt, e.fileOffset, at, at + e.length);
          }
          assert.equal(sha(rebuilt), sha(want), `extent map of ${r}`);
        }
        const prev = inodeMap.get(st.ino);
        if (prev !== undefined) assert.equal(got.inode, prev, `hard link ${r}`);
        inodeMap.set(st.ino, got.inode);
      }
      if (type === 'symlink') assert.equal(await fs.readlink(r), readlinkSync(p, 'utf8'), `target of ${r}`);
      if (type === 'dir') await visit(r);
      checked++;
    }
  };
  await visit('');
  const walked = new Set<string>();
  for await (const e of fs.walk()) {
    if (opts.ignore?.some((i) => e.path === i || e.path.startsWith(`${i}/`))) continue;
    walked.add(e.path);
  }
  assert.deepEqual([...walked].sort(), [...expected].sort(), 'walk() lists the source tree');
  return checked;
}
