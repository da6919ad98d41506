/**
 * Extracting files from a restore point into a directory (keeping mode, owner, times, symlinks
 * and hard links) or into a tar stream.
 */
import { chmod, lchown, link, lutimes, mkdir, open, symlink, utimes } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { VmvaultError } from '../core/index.js';
import type { DirEntry, FileStat, Filesystem } from '../filesystems/index.js';
import type { PointFiles, VolumeEntry } from './disk-tree.js';
import type { TarWriter } from './tar-writer.js';

/** Where extracted files go. */
export type ExtractTarget = { kind: 'dir'; dir: string } | { kind: 'tar'; tar: TarWriter };

/** Counters of an extraction. */
export interface ExtractReport {
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  other: number;
  bytes: number;
}

interface Job {
  fs: Filesystem;
  volume: VolumeEntry;
  inner: string;
  rel: string;
  st: FileStat;
}

/** Extracts `paths` (view paths; files or directories, recursively) of a restore point. */
export async function extractPaths(
  files: PointFiles,
  paths: readonly string[],
  target: ExtractTarget,
): Promise<ExtractReport> {
  const report: ExtractReport = { files: 0, dirs: 0, symlinks: 0, hardlinks: 0, other: 0, bytes: 0 };
  const links = new Map<string, string>();
  const asRoot = process.getuid?.() === 0;
  const dirTimes: { dest: string; st: FileStat }[] = [];

  const emit = async (j: Job): Promise<void> => {
    const { st, rel } = j;
    const dest = target.kind === 'dir' ? join(target.dir, rel) : '';
    if (st.type === 'dir') {
      report.dirs++;
      if (target.kind === 'dir') {
        await mkdir(dest, { recursive: true });
        dirTimes.push({ dest, st });
      } else {
        await target.tar.entry({
          path: `${rel}/`,
          type: 'dir',
          mode: st.mode,
          uid: st.uid,
          gid: st.gid,
          mtimeMs: st.mtime.getTime(),
        });
      }
      const entries: DirEntry[] = await j.fs.readdir(j.inner);
      for (const e of entries) {
        await emit({ ...j, inner: posix.join(j.inner, e.name), rel: posix.join(rel, e.name), st: e });
      }
      return;
    }
    if (st.type === 'symlink') {
      report.symlinks++;
      const to = await j.fs.readlink(j.inner);
      if (target.kind === 'dir') {
        await symlink(to, dest);
        if (asRoot) await lchown(dest, st.uid, st.gid);
        await lutimes(dest, st.atime, st.mtime);
      } else {
        await target.tar.entry({
          path: rel,
          type: 'symlink',
          linkname: to,
          mode: st.mode,
          uid: st.uid,
          gid: st.gid,
          mtimeMs: st.mtime.getTime(),
        });
      }
      return;
    }
    if (st.type !== 'file') {
      report.other++; // devices, fifos, sockets: not extracted
      return;
    }
    const key = `${j.volume.path}:${st.inode}`;
    const first = st.nlink > 1 ? links.get(key) : undefined;
    if (first !== undefined) {
      report.hardlinks++;
      if (target.kind === 'dir') await link(join(target.dir, first), dest);
      else
        await target.tar.entry({
          path: rel,
          type: 'hardlink',
          linkname: first,
          mode: st.mode,
          uid: st.uid,
          gid: st.gid,
          mtimeMs: st.mtime.getTime(),
        });
      return;
    }
    if (st.nlink > 1) links.set(key, rel);
    report.files++;
    if (target.kind === 'dir') {
      const fh = await open(dest, 'wx', 0o600);
      try {
        let pos = 0;
        for await (const piece of j.fs.readFile(j.inner)) {
          await fh.write(piece, 0, piece.length, pos);
          pos += piece.length;
        }
        report.bytes += pos;
        await fh.truncate(st.size); // trailing holes
      } finally {
        await fh.close();
      }
      if (asRoot) await lchown(dest, st.uid, st.gid);
      await chmod(dest, st.mode & 0o7777);
      await utimes(dest, st.atime, st.mtime);
    } else {
      await target.tar.entry({
        path: rel,
        type: 'file',
        size: st.size,
        mode: st.mode,
        uid: st.uid,
        gid: st.gid,
        mtimeMs: st.mtime.getTime(),
      });
      let n = 0;
      for await (const piece of j.fs.readFile(j.inner)) {
        await target.tar.data(piece);
        n += piece.length;
      }
      if (n !== st.size)
        throw new VmvaultError('E_FS_CORRUPT', `${j.inner}: read ${n} bytes, expected ${st.size}`);
      await target.tar.endFile(n);
      report.bytes += n;
    }
  };

  if (target.kind === 'dir') await mkdir(target.dir, { recursive: true });
  for (const p of paths) {
    const r = await files.resolve(p);
    if (!r.volume)
      throw new VmvaultError('E_USAGE', `${p} is not inside a filesystem`, {
        hint: 'name a path below a volume, e.g. /part1/etc',
      });
    const fs = await files.filesystem(r.volume);
    const st = await fs.stat(r.inner);
    const base = r.inner === '/' ? r.volume.path.replace(/\//g, '-') : posix.basename(r.inner);
    await emit({ fs, volume: r.volume, inner: r.inner, rel: base, st });
  }
  // Directory metadata last, deepest first, so adding entries does not change their times.
  for (const { dest, st } of dirTimes.reverse()) {
    if (asRoot) await lchown(dest, st.uid, st.gid);
    await chmod(dest, st.mode & 0o7777);
    await utimes(dest, st.atime, st.mtime);
  }
  if (target.kind === 'tar') await target.tar.finish();
  return report;
}
